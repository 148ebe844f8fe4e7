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

/** The ext_authz per-route config of a route (`ExtAuthzPerRoute`), or undefined when it has none. */
function perRoute(route: Obj): Obj | undefined {
  return route.typed_per_filter_config?.['envoy.filters.http.ext_authz'];
}

function routesOf(hcm: Obj): Obj[] {
  return (hcm.route_config.virtual_hosts as Obj[]).flatMap((vh) => vh.routes as Obj[]);
}

/** Routes whose policy is laxer than the sidecar's default: the filter skipped, or no token required. */
function isLenient(route: Obj): boolean {
  const cfg = perRoute(route);
  return cfg?.disabled === true || ['none', 'optional'].includes(cfg?.check_settings?.context_extensions?.validate);
}

/** Routes that demand more than a valid token: a scope or a role. */
function isStricter(route: Obj): boolean {
  const ext = perRoute(route)?.check_settings?.context_extensions ?? {};
  return 'required_scopes' in ext || 'required_roles' in ext;
}

/**
 * Envoy's first-match route selection for the three path matchers the examples use, as the
 * RouteMatch proto defines them (`path` and `path_separated_prefix` ignore the query string).
 */
function routeFor(routes: Obj[], requestPath: string): Obj | undefined {
  const withoutQuery = requestPath.split('?')[0];
  return routes.find(({ match }) => {
    const fold = (s: string) => (match.case_sensitive === false ? s.toLowerCase() : s);
    if ('path' in match) return fold(withoutQuery) === fold(match.path);
    if ('prefix' in match) return fold(requestPath).startsWith(fold(match.prefix));
    if ('path_separated_prefix' in match) {
      const p = fold(withoutQuery);
      const pre = fold(match.path_separated_prefix);
      return p === pre || p.startsWith(pre + '/');
    }
    throw new Error(`unsupported route match ${JSON.stringify(match)}`);
  });
}

/** A proto3 JSON Duration (`"0.25s"`, `"5s"`) in seconds. */
function seconds(duration: string): number {
  const m = /^(\d+(?:\.\d+)?)s$/.exec(duration);
  if (!m) throw new Error(`not a Duration: ${JSON.stringify(duration)}`);
  return Number(m[1]);
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

/** The cluster each HTTP connection manager's ext_authz filter calls. */
function extAuthzClusters(doc: Obj): Obj[] {
  const clusters = new Map<string, Obj>((doc.static_resources.clusters as Obj[]).map((c) => [c.name, c]));
  return httpManagers(doc).map((hcm) => {
    const authz = (hcm.http_filters as Obj[]).find((f) => f.typed_config?.['@type'] === EXT_AUTHZ_TYPE)!;
    return clusters.get(authz.typed_config.grpc_service.envoy_grpc.cluster_name)!;
  });
}

const UPSTREAM_TLS_TYPE = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';

/** The clusters that speak TLS upstream (a transport_socket holding an UpstreamTlsContext). */
function tlsClusters(doc: Obj): Obj[] {
  return ((doc.static_resources?.clusters ?? []) as Obj[]).filter((c) => c.transport_socket?.typed_config?.['@type'] === UPSTREAM_TLS_TYPE);
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

      it('normalises the path wherever routes pick the ext_authz policy by path, and lets no lenient route over-match', function () {
        for (const hcm of httpManagers(load(file))) {
          const routes = routesOf(hcm);
          const policies = new Set(routes.map((r) => JSON.stringify(perRoute(r) ?? null)));
          if (policies.size < 2) continue; // one policy for every path: nothing to confuse
          // Without these, /public/../api or /healthz%2F..%2Fapi routes as lenient and an app that
          // resolves the path itself serves /api (Envoy's defaults leave all three off).
          expect(hcm.normalize_path, `${hcm.stat_prefix}: normalize_path`).to.equal(true);
          expect(hcm.merge_slashes, `${hcm.stat_prefix}: merge_slashes`).to.equal(true);
          expect(['UNESCAPE_AND_REDIRECT', 'REJECT_REQUEST'], `${hcm.stat_prefix}: path_with_escaped_slashes_action`).to.include(hcm.path_with_escaped_slashes_action);
          for (const r of routes) {
            const where = `${hcm.stat_prefix}: route ${JSON.stringify(r.match)}`;
            // A prefix for a skipped check also skips it for /healthz-admin and /healthz/anything.
            if (perRoute(r)?.disabled === true) expect(Object.keys(r.match), where).to.deep.equal(['path']);
            // A plain prefix for a lenient tree also takes /publications; "/" matches all anyway.
            if (isLenient(r) && r.match.prefix !== '/') expect(r.match, where).not.to.have.property('prefix');
            // Envoy matches case-sensitively; apps often do not, and /API would reach a laxer route.
            if (isStricter(r)) expect(r.match.case_sensitive, `${where}: case_sensitive`).to.equal(false);
          }
        }
      });

      it('gates Checks on the sidecar\'s health: a health-checked ext_authz cluster never enters panic mode', function () {
        for (const cluster of extAuthzClusters(load(file))) {
          if (!cluster.health_checks?.length) continue;
          // One host: unhealthy means 0 % healthy, below the default 50 % panic threshold, and in
          // panic Envoy sends to unhealthy hosts too.
          expect(cluster.common_lb_config?.healthy_panic_threshold?.value, `${cluster.name}: healthy_panic_threshold`).to.equal(0);
        }
      });

      it('re-checks a health-checked ext_authz cluster that has carried no traffic at least as often as interval', function () {
        for (const cluster of extAuthzClusters(load(file))) {
          for (const [i, hc] of ((cluster.health_checks ?? []) as Obj[]).entries()) {
            const where = `${cluster.name}: health_checks[${i}]`;
            // Until the cluster has carried traffic Envoy uses no_traffic_interval (default 60 s), and
            // at panic threshold 0 an unhealthy sidecar gets none: a failed first check would hold
            // every request at 503 for a minute.
            expect(hc.no_traffic_interval, `${where}.no_traffic_interval`).to.be.a('string');
            expect(seconds(hc.no_traffic_interval), `${where}.no_traffic_interval`).to.be.at.most(seconds(hc.interval));
            if (hc.no_traffic_healthy_interval !== undefined) {
              expect(seconds(hc.no_traffic_healthy_interval), `${where}.no_traffic_healthy_interval`).to.be.at.most(seconds(hc.interval));
            }
          }
        }
      });

      it('verifies the peer of every upstream TLS connection (they carry injected tokens): a trusted CA and a SAN matcher', function () {
        for (const cluster of tlsClusters(load(file))) {
          const tls = cluster.transport_socket.typed_config;
          const vc = tls.common_tls_context?.validation_context;
          // Without a validation_context Envoy accepts any certificate: a man in the middle gets the token.
          expect(vc, `${cluster.name}: common_tls_context.validation_context`).to.be.an('object');
          expect(vc.trusted_ca?.filename ?? vc.trusted_ca?.inline_string, `${cluster.name}: validation_context.trusted_ca`).to.be.a('string').and.not.equal('');
          const sans: Obj[] = vc.match_typed_subject_alt_names ?? [];
          expect(sans, `${cluster.name}: validation_context.match_typed_subject_alt_names`).to.have.length.greaterThan(0);
          for (const san of sans) {
            expect(san.san_type, `${cluster.name}: san_type`).to.be.a('string');
            expect(Object.keys(san.matcher ?? {}), `${cluster.name}: SAN matcher`).to.have.length.greaterThan(0);
          }
          // The name checked is the name asked for.
          if (tls.sni !== undefined) expect(sans.map((s) => s.matcher.exact), `${cluster.name}: a SAN matcher for sni`).to.include(tls.sni);
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

  it('sends only the exact /healthz unchecked and only the /public tree without a token, whatever the case or suffix', function () {
    const ingress = httpManagers(load(path.join(repoRoot(), 'envoy', 'envoy.yaml'))).find((h) => h.stat_prefix === 'ingress_http')!;
    const routes = routesOf(ingress);
    const policyOf = (p: string) => perRoute(routeFor(routes, p)!);
    expect(policyOf('/healthz')?.disabled).to.equal(true);
    expect(policyOf('/healthz?verbose=1')?.disabled).to.equal(true);
    for (const p of ['/public', '/public/', '/public/logo.png']) expect(policyOf(p)?.check_settings?.context_extensions?.validate, p).to.equal('none');
    for (const p of ['/healthz-admin', '/healthz/', '/healthz/x', '/HEALTHZ', '/publications', '/public-admin', '/PUBLIC/x', '/api/orders', '/']) {
      expect(isLenient(routeFor(routes, p)!), p).to.equal(false);
    }
    for (const p of ['/api/orders', '/API/orders', '/Api']) expect(policyOf(p)?.check_settings?.context_extensions?.required_scopes, p).to.equal('access_as_user');
  });

  it('sends the egress app token to partner_api over TLS (so the peer check above applies to it)', function () {
    const names = tlsClusters(load(path.join(repoRoot(), 'envoy', 'envoy.yaml'))).map((c) => c.name);
    expect(names).to.include('partner_api');
  });

  it('health-checks the ext_authz cluster of envoy.yaml', function () {
    const doc = load(path.join(repoRoot(), 'envoy', 'envoy.yaml'));
    const cluster = (doc.static_resources.clusters as Obj[]).find((c) => c.name === 'sidecar_ext_authz')!;
    expect(cluster.health_checks[0].grpc_health_check.service_name).to.equal('envoy.service.auth.v3.Authorization');
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
