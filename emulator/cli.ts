#!/usr/bin/env node
/**
 * Starts the emulator from the command line:
 *   node dist/emulator/cli.js [--port N] [--imds-port N] [--admin] [--secrets-file PATH]
 * Prints one JSON line (origin, instance, caFile, imdsOrigin, tenant id, sidecar app id) and runs
 * until SIGINT/SIGTERM. Secrets never go to stdout: `--secrets-file` writes the effective scenario
 * (secrets and private keys included, mode 0600) for local use and prints only its path.
 */
import { writeFile } from 'node:fs/promises';
import { startEmulator } from './index.js';

interface CliArgs {
  port?: number;
  imdsPort?: number;
  admin: boolean;
  secretsFile?: string;
}

function parseArgs(argv: string[]): CliArgs {
  const args: CliArgs = { admin: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const port = (v: string): number => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${a}: not a port: ${v}`);
      return n;
    };
    if (a === '--port') args.port = port(next());
    else if (a === '--imds-port') args.imdsPort = port(next());
    else if (a === '--admin') args.admin = true;
    else if (a === '--secrets-file') args.secretsFile = next();
    else throw new Error(`unknown argument ${a} (expected --port N, --imds-port N, --admin, --secrets-file PATH)`);
  }
  return args;
}

async function main(): Promise<void> {
  let args: CliArgs;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  const emulator = await startEmulator({ admin: args.admin, port: args.port, imdsPort: args.imdsPort });
  if (args.secretsFile) {
    await writeFile(args.secretsFile, JSON.stringify({ appServiceSecret: emulator.appServiceSecret, scenario: emulator.scenario }, null, 2), { mode: 0o600 });
  }
  process.stdout.write(JSON.stringify({
    origin: emulator.origin,
    instance: emulator.instance,
    caFile: emulator.caFile,
    imdsOrigin: emulator.imdsOrigin,
    tenantId: emulator.scenario.tenants.primary.id,
    sidecarAppId: emulator.scenario.apps.sidecarApi.appId,
    admin: args.admin,
    secretsFile: args.secretsFile,
  }) + '\n');
  const stop = (): void => {
    emulator.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

void main();
