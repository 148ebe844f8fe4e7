/**
 * The Envoy examples in envoy/ must be configs Envoy would accept (every key known to its v3 protos,
 * typed_config included) and must wire the sidecar the way the docs say.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { CONTEXT_EXTENSION_KEYS } from '../../src/extauthz/policy.js';
import { repoRoot } from './repo.js';
import { validateMessage } from './proto-schema.js';

const BOOTSTRAP = 'envoy.config.bootstrap.v3.Bootstrap';
const EXT_AUTHZ_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
const ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function envoyFiles(): string[] {
  const dir = path.join(repoRoot(), 'envoy');
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => path.join(dir, f));
}

function load(file: string): Obj {
  return YAML.parse(readFileSync(file, 'utf8')) as Obj;
}

function httpManagers(doc: Obj): Obj[] {
  const out: Obj[] = [];
  for (const l of doc.static_resources?.listeners ?? []) {
    for (const fc of l.filter_chains ?? []) {
      for (const f of fc.filters ?? []) if (f.name === 'envoy.filters.network.http_connection_manager') out.push(f.typed_config);
    }
  }
  return out;
}

describe('Envoy examples (envoy/*.yaml)', function () {
  this.timeout(20_000);

  it('has at least one example', function () {
    expect(envoyFiles()).to.have.length.greaterThan(0);
  });

  for (const file of envoyFiles()) {
    describe(path.basename(file), function () {
      it('decodes as an Envoy v3 Bootstrap with no unknown or deprecated keys, typed_config included', function () {
        expect(validateMessage(BOOTSTRAP, load(file))).to.deep.equal([]);
      });

      it('calls the sidecar over gRPC v3 on 127.0.0.1:9191, fails closed and never buffers bodies', function () {
        const doc = load(file);
        const clusters = new Map<string, Obj>((doc.static_resources.clusters as Obj[]).map((c) => [c.name, c]));
        const managers = httpManagers(doc);
        expect(managers).to.have.length.greaterThan(0);
        for (const hcm of managers) {
          const filters: Obj[] = hcm.http_filters;
          const authz = filters.find((f) => f.typed_config?.['@type'] === EXT_AUTHZ_TYPE);
          expect(authz, `${hcm.stat_prefix}: ext_authz filter`).to.not.equal(undefined);
          expect(filters.at(-1)?.typed_config?.['@type'], 'router is the last filter').to.equal(ROUTER_TYPE);
          const cfg = authz!.typed_config;
          expect(cfg.transport_api_version).to.equal('V3');
          expect(cfg.failure_mode_allow).to.equal(false);
          expect(cfg).not.to.have.property('with_request_body');
          expect(cfg.grpc_service.timeout).to.match(/^\d+(\.\d+)?s$/);
          const cluster = clusters.get(cfg.grpc_service.envoy_grpc.cluster_name);
          expect(cluster, 'ext_authz cluster').to.not.equal(undefined);
          const sa = cluster!.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
          expect(sa).to.deep.equal({ address: '127.0.0.1', port_value: 9191 });
          const http2 = cluster!.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
          expect(http2.explicit_http_config).to.have.property('http2_protocol_options');
        }
      });

      it('only uses context_extensions keys the sidecar knows', function () {
        const known = new Set<string>(CONTEXT_EXTENSION_KEYS);
        for (const hcm of httpManagers(load(file))) {
          for (const vh of hcm.route_config.virtual_hosts) {
            for (const r of vh.routes) {
              const ext = r.typed_per_filter_config?.['envoy.filters.http.ext_authz']?.check_settings?.context_extensions ?? {};
              for (const key of Object.keys(ext)) expect(known.has(key), `context_extensions key ${key}`).to.equal(true);
            }
          }
        }
      });
    });
  }

  it('has an ingress route that injects a downstream token and an egress route that injects an app token', function () {
    const doc = load(path.join(repoRoot(), 'envoy', 'envoy.yaml'));
    const exts = httpManagers(doc).flatMap((hcm) =>
      (hcm.route_config.virtual_hosts as Obj[]).flatMap((vh) =>
        (vh.routes as Obj[]).map((r) => r.typed_per_filter_config?.['envoy.filters.http.ext_authz']?.check_settings?.context_extensions),
      ),
    );
    expect(exts).to.deep.include({ required_scopes: 'access_as_user', downstream_api: 'graph', inject_header: 'x-graph-authorization' });
    expect(exts).to.deep.include({ validate: 'none', downstream_api: 'partner-api' });
  });

  describe('the schema check itself', function () {
    it('rejects a misspelt field, also inside typed_config', function () {
      const doc = load(path.join(repoRoot(), 'envoy', 'envoy.yaml'));
      doc.static_resources.clusters[0].conect_timeout = '1s';
      const hcm = httpManagers(doc)[0];
      hcm.http_filters[0].typed_config.failure_mode_alow = true;
      const errors = validateMessage(BOOTSTRAP, doc);
      expect(errors.some((e) => e.includes('conect_timeout') && e.includes('envoy.config.cluster.v3.Cluster'))).to.equal(true);
      expect(errors.some((e) => e.includes('failure_mode_alow') && e.includes('ext_authz.v3.ExtAuthz'))).to.equal(true);
    });

    it('rejects an unknown @type, a bad enum value, a wrong value type and two members of one oneof', function () {
      const doc = load(path.join(repoRoot(), 'envoy', 'envoy.yaml'));
      const hcm = httpManagers(doc)[0];
      hcm.codec_type = 'HTTP4';
      hcm.http_filters[1].typed_config['@type'] = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr';
      doc.static_resources.clusters[0].connect_timeout = 5;
      hcm.route_config.virtual_hosts[0].routes[0].typed_per_filter_config['envoy.filters.http.ext_authz'].check_settings = { context_extensions: {} };
      const errors = validateMessage(BOOTSTRAP, doc);
      expect(errors.join('\n')).to.contain('"HTTP4" is not a CodecType value');
      expect(errors.join('\n')).to.contain('unknown type type.googleapis.com/envoy.extensions.filters.http.router.v3.Routr');
      expect(errors.join('\n')).to.contain('connect_timeout: Duration must be a string');
      expect(errors.join('\n')).to.contain('disabled and check_settings');
    });
  });
});
