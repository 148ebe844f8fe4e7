/**
 * Build step (`npm run build` runs it after tsc): parses the Envoy .proto tree shipped by
 * @grpc/grpc-js-xds and writes the pruned ext_authz descriptor beside the compiled protos module,
 * where `loadExtAuthzProtos()` reads it at start-up. Generated, never committed.
 */
import { writeFileSync } from 'node:fs';
import { DESCRIPTOR_FILE, buildExtAuthzDescriptor } from './protos.js';

writeFileSync(DESCRIPTOR_FILE, JSON.stringify(buildExtAuthzDescriptor()) + '\n');
process.stdout.write(`wrote ${DESCRIPTOR_FILE}\n`);
