/**
 * The Kubernetes and Istio examples in k8s/ must match the sidecar's defaults (ports, probe paths),
 * run it as a native sidecar, grant nothing privileged, shut down in order, carry the pod
 * annotations Istio needs and point Istio's provider at 9191 through one mesh-wide ServiceEntry;
 * docs/deployment.md must show the same provider, probes, user and resources.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { memoryQuantityBytes } from '../../bench/setup.js';
import { defaultOf } from '../../src/config/defaults.js';
import { loadConfig } from '../../src/config/load.js';
import { defaultPolicy, routePolicy, routeTable } from '../../src/extauthz/policy.js';
import { SHUTDOWN_FORCE_EXIT_MS } from '../../src/sidecar.js';
import { repoRoot } from './repo.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

/** Every document of every manifest under k8s/, parsed strictly (a YAML error fails the test). */
function manifests(): Array<{ file: string; doc: Obj }> {
  return yamlFiles(path.join(repoRoot(), 'k8s')).flatMap((file) =>
    YAML.parseAllDocuments(readFileSync(file, 'utf8')).map((d) => {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0].message}`);
      return { file, doc: d.toJS() as Obj };
    }),
  );
}

function ofKind(kind: string): Obj[] {
  return manifests()
    .map((m) => m.doc)
    .filter((d) => d?.kind === kind);
}

function hostPort(value: string): { host: string; port: number } {
  const u = new URL(value.includes('://') ? value : `grpc://${value}`);
  return { host: u.hostname, port: Number(u.port) };
}

/** Splits an Istio provider `service`, written `[<namespace>/]<hostname>`. */
function providerService(service: string): { namespace?: string; host: string } {
  const slash = service.indexOf('/');
  return slash < 0 ? { host: service } : { namespace: service.slice(0, slash), host: service.slice(slash + 1) };
}

/** The text of each ```yaml block of a Markdown file, with its list-item indentation removed. */
function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^( *)```ya?ml\n([\s\S]*?)^\1```/gm)].map(([, indent, body]) => body.replace(new RegExp(`^ {0,${indent.length}}`, 'gm'), ''));
}

function envValue(container: Obj, name: string): string | undefined {
  return (container.env as Obj[] | undefined)?.find((e) => e.name === name)?.value;
}

function readRepoFile(...segments: string[]): string {
  return readFileSync(path.join(repoRoot(), ...segments), 'utf8');
}

/** How long a container's preStop hook holds back its SIGTERM, in seconds: the sleep action or an exec of sleep. */
function preStopSeconds(container: Obj): number {
  const hook = container.lifecycle?.preStop;
  if (hook?.sleep !== undefined) return Number(hook.sleep.seconds);
  const command = hook?.exec?.command as string[] | undefined;
  if (command !== undefined && /(^|\/)sleep$/.test(command[0])) return Number(command[1]);
  return 0;
}

/** Every `annotations` map anywhere in a parsed YAML value. */
function annotationMaps(value: unknown): Obj[] {
  if (Array.isArray(value)) return value.flatMap(annotationMaps);
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value as Obj).flatMap(([k, v]) => (k === 'annotations' && v !== null && typeof v === 'object' ? [v as Obj] : annotationMaps(v)));
}

describe('Kubernetes examples (k8s/**/*.yaml)', function () {
  const deployment = () => ofKind('Deployment')[0];
  const podSpec = () => deployment().spec.template.spec as Obj;
  const sidecar = () => (podSpec().initContainers as Obj[]).find((c) => c.name === 'entra-sidecar') as Obj;
  const management = hostPort(defaultOf('Sidecar:Management:Url'));

  it('parses every manifest and names a kind and apiVersion in each document', function () {
    const all = manifests();
    expect(all.length).to.be.at.least(6);
    for (const { file, doc } of all) {
      expect(doc.apiVersion, file).to.be.a('string');
      expect(doc.kind, file).to.be.a('string');
    }
  });

  it('runs the sidecar as a native sidecar (init container with restartPolicy Always)', function () {
    const c = sidecar();
    expect(c, 'entra-sidecar init container').to.not.equal(undefined);
    expect(c.restartPolicy).to.equal('Always');
    expect((podSpec().containers as Obj[]).map((x) => x.name)).not.to.include('entra-sidecar');
  });

  it('keeps the identity API and ext_authz on the loopback defaults and the management port on all interfaces', function () {
    const c = sidecar();
    expect(envValue(c, 'Sidecar__Http__Url')).to.equal(defaultOf('Sidecar:Http:Url'));
    expect(hostPort(envValue(c, 'Sidecar__Http__Url')!).host).to.equal('127.0.0.1');
    expect(envValue(c, 'Sidecar__ExtAuthz__Address')).to.equal(defaultOf('Sidecar:ExtAuthz:Address'));
    expect(hostPort(envValue(c, 'Sidecar__ExtAuthz__Address')!)).to.deep.equal({ host: '127.0.0.1', port: 9191 });
    expect(envValue(c, 'Sidecar__Management__Url')).to.equal(defaultOf('Sidecar:Management:Url'));
    // Only the management port is published on the pod IP.
    expect((c.ports as Obj[]).map((p) => p.containerPort)).to.deep.equal([management.port]);
  });

  it('probes the management port: startup and liveness on /healthz, readiness on /readyz', function () {
    const c = sidecar();
    const port = (probe: Obj) => {
      const p = probe.httpGet.port;
      return typeof p === 'number' ? p : (c.ports as Obj[]).find((x) => x.name === p)?.containerPort;
    };
    expect(c.startupProbe.httpGet.path).to.equal('/healthz');
    expect(c.livenessProbe.httpGet.path).to.equal('/healthz');
    expect(c.readinessProbe.httpGet.path).to.equal('/readyz');
    for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) expect(port(probe)).to.equal(management.port);
  });

  it('runs the sidecar as the image\'s own user', function () {
    const users = [...readRepoFile('Dockerfile').matchAll(/^USER\s+(\d+)(?::(\d+))?\s*$/gm)];
    expect(users, 'a numeric USER in the Dockerfile').to.have.length.greaterThan(0);
    const [, uid, gid] = users[users.length - 1];
    const sc = sidecar().securityContext as Obj;
    expect(sc.runAsUser, 'runAsUser').to.equal(Number(uid));
    if (gid !== undefined) expect(sc.runAsGroup, 'runAsGroup').to.equal(Number(gid));
  });

  it('holds the app and Envoy back on SIGTERM until the endpoints have caught up, and leaves the sidecar time to drain', function () {
    const spec = podSpec();
    const containers = spec.containers as Obj[];
    // Without a hook both exit at once on SIGTERM while the pod is still in the Service's endpoints
    // on other nodes and proxies: their callers get resets and 503s.
    for (const c of containers) expect(preStopSeconds(c), `${c.name} preStop`).to.be.at.least(5);
    // Envoy also carries the app's outbound calls (egress), which the app may make while it finishes.
    const envoy = containers.find((c) => c.name === 'envoy');
    if (envoy !== undefined) for (const c of containers) expect(preStopSeconds(envoy), `envoy preStop against ${c.name}'s`).to.be.at.least(preStopSeconds(c));
    // The sidecar, a native sidecar, gets SIGTERM once the app and Envoy have exited, and exits at
    // the latest SHUTDOWN_FORCE_EXIT_MS later; the grace period counts from the start of the preStop hooks.
    expect(spec.terminationGracePeriodSeconds, 'terminationGracePeriodSeconds').to.be.a('number');
    const longest = Math.max(...containers.map(preStopSeconds));
    expect(spec.terminationGracePeriodSeconds).to.be.at.least(longest + SHUTDOWN_FORCE_EXIT_MS / 1000);
  });

  it('requests for the sidecar at least the warm memory docs/deployment.md quotes, within its limit', function () {
    const warm = /about (\d+) \/ (\d+) MiB after [\d,]+ warm Checks/.exec(readRepoFile('docs', 'deployment.md'));
    expect(warm, 'the warm RSS figures in docs/deployment.md').to.not.equal(null);
    const warmMib = Math.max(Number(warm![1]), Number(warm![2]));
    const { requests, limits } = sidecar().resources as Obj;
    expect(memoryQuantityBytes(String(requests.memory)) / 2 ** 20, 'requests.memory (MiB)').to.be.at.least(warmMib);
    expect(memoryQuantityBytes(String(requests.memory))).to.be.at.most(memoryQuantityBytes(String(limits.memory)));
  });

  it('shows in docs/deployment.md the probes, user and resources of the manifest\'s sidecar', function () {
    const snippets = yamlBlocks(readRepoFile('docs', 'deployment.md')).filter((b) => /^initContainers:/m.test(b));
    expect(snippets, 'initContainers snippets').to.have.length(1);
    const shown = ((YAML.parse(snippets[0]) as Obj).initContainers as Obj[]).find((c) => c.name === 'entra-sidecar') as Obj;
    const c = sidecar();
    // A startupProbe on /readyz would restart the sidecar whenever Entra is out of reach.
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) expect(shown[probe], probe).to.deep.equal(c[probe]);
    expect(shown.securityContext.runAsUser, 'runAsUser').to.equal(c.securityContext.runAsUser);
    expect(shown.securityContext.runAsGroup, 'runAsGroup').to.equal(c.securityContext.runAsGroup);
    expect(shown.resources, 'resources').to.deep.equal(c.resources);
  });

  it('asks Istio for a native istio-proxy and keeps the management port out of its capture and of ext_authz', function () {
    const annotations = (deployment().spec.template.metadata.annotations ?? {}) as Obj;
    // As a plain container istio-proxy starts only after entra-sidecar's startupProbe has passed,
    // and Istio rewrites that probe to pilot-agent inside istio-proxy: the pod would never start.
    expect(annotations['sidecar.istio.io/nativeSidecar'], 'sidecar.istio.io/nativeSidecar').to.equal('true');
    // A plain-text scrape of /metrics through istio-proxy: refused under STRICT mTLS, and sent to
    // ext_authz without a token by the CUSTOM policy.
    const excluded = String(annotations['traffic.sidecar.istio.io/excludeInboundPorts'] ?? '').split(',').map((p) => p.trim());
    expect(excluded, 'traffic.sidecar.istio.io/excludeInboundPorts').to.include(String(management.port));
    // Istio's injector compares a probe's port number with the excluded ports to leave the probe
    // alone; a named port it may rewrite to pilot-agent with no prober behind it.
    const c = sidecar();
    for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) expect(probe.httpGet.port).to.equal(management.port);
    for (const policy of ofKind('AuthorizationPolicy')) {
      for (const rule of policy.spec.rules as Obj[]) {
        expect(rule.to, `${policy.metadata.name}: a rule without "to" selects every port`).to.be.an('array');
        for (const to of rule.to as Obj[]) expect(to.operation?.notPorts ?? [], `${policy.metadata.name}: notPorts`).to.include(String(management.port));
      }
    }
    // The Istio instructions show the same annotations.
    for (const doc of [['k8s', 'README.md'], ['docs', 'deployment.md']]) {
      const shown = yamlBlocks(readRepoFile(...doc)).flatMap((b) => annotationMaps(YAML.parse(b)));
      expect(shown.some((a) => a['sidecar.istio.io/nativeSidecar'] === annotations['sidecar.istio.io/nativeSidecar'] && a['traffic.sidecar.istio.io/excludeInboundPorts'] === annotations['traffic.sidecar.istio.io/excludeInboundPorts']), `${doc.join('/')} shows both annotations`).to.equal(true);
    }
  });

  it('reads the client secret from a Secret, never from a literal value', function () {
    const c = sidecar();
    const secretEnv = (c.env as Obj[]).filter((e) => /secret|password|certificate|base64/i.test(e.name) && !/SourceType$/.test(e.name));
    expect(secretEnv).to.have.length.greaterThan(0);
    for (const e of secretEnv) {
      expect(e.value, e.name).to.equal(undefined);
      expect(e.valueFrom?.secretKeyRef?.name, e.name).to.be.a('string');
    }
  });

  it('grants no container anything privileged and gives the sidecar a writable /tmp only', function () {
    const spec = podSpec();
    expect(spec.hostNetwork ?? false).to.equal(false);
    expect(spec.hostPID ?? false).to.equal(false);
    expect(spec.hostIPC ?? false).to.equal(false);
    expect(spec.securityContext.runAsNonRoot).to.equal(true);
    for (const v of spec.volumes as Obj[]) expect(v, v.name).not.to.have.property('hostPath');
    for (const c of [...(spec.initContainers as Obj[]), ...(spec.containers as Obj[])]) {
      const sc = c.securityContext as Obj;
      expect(sc, c.name).to.be.an('object');
      expect(sc.privileged ?? false, `${c.name} privileged`).to.equal(false);
      expect(sc.allowPrivilegeEscalation, `${c.name} allowPrivilegeEscalation`).to.equal(false);
      expect(sc.readOnlyRootFilesystem, `${c.name} readOnlyRootFilesystem`).to.equal(true);
      expect(sc.runAsNonRoot ?? spec.securityContext.runAsNonRoot, `${c.name} runAsNonRoot`).to.equal(true);
      expect(sc.runAsUser ?? 1, `${c.name} runAsUser`).to.not.equal(0);
      expect(sc.capabilities?.drop, `${c.name} capabilities.drop`).to.include('ALL');
      expect(sc.capabilities?.add ?? [], `${c.name} capabilities.add`).to.deep.equal([]);
      expect((sc.seccompProfile ?? spec.securityContext.seccompProfile)?.type, `${c.name} seccomp`).to.equal('RuntimeDefault');
      expect(c.resources?.limits?.memory, `${c.name} memory limit`).to.be.a('string');
    }
    const tmp = (sidecar().volumeMounts as Obj[]).find((m) => m.mountPath === '/tmp');
    expect(tmp, 'sidecar /tmp mount').to.not.equal(undefined);
    const vol = (spec.volumes as Obj[]).find((v) => v.name === tmp!.name);
    expect(vol).to.have.property('emptyDir');
  });

  const meshConfig = () => {
    const ops = ofKind('IstioOperator');
    expect(ops).to.have.length(1);
    return ops[0].spec.meshConfig as Obj;
  };

  it('gives each envoy.yaml ingress route, under Istio, the policy its context_extensions give it (k8s/README route rules)', function () {
    // The Istio edit's env block, added to the manifest's sidecar env (secrets as placeholders).
    const readme = readRepoFile('k8s', 'README.md');
    const block = yamlBlocks(readme).map((b) => YAML.parse(b) as unknown).find((b): b is Obj[] => Array.isArray(b) && b.some((e: Obj) => String(e?.name).startsWith('Sidecar__ExtAuthz__Routes__')));
    expect(block, 'the README\'s route-rule env block').to.not.equal(undefined);
    const env: Record<string, string> = {};
    for (const e of [...(sidecar().env as Obj[]), ...block!]) env[e.name as string] = e.value !== undefined ? String(e.value) : 'placeholder';
    const loaded = loadConfig({ argv: [], env, cwd: repoRoot() });
    if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
    const options = loaded.config.sidecar.extAuthz;
    const defaults = defaultPolicy(options);
    const table = routeTable(defaults, options.routes)!;
    // envoy.yaml's ingress routes, matched the way Envoy matches them (first match wins).
    const envoy = YAML.parse(readRepoFile('envoy', 'envoy.yaml')) as Obj;
    const ingress = (envoy.static_resources.listeners as Obj[]).find((l) => l.name === 'ingress') as Obj;
    const envoyRoutes = ingress.filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes as Obj[];
    const envoyRoute = (p: string): Obj => {
      const found = envoyRoutes.find(({ match: m }) => {
        if (m.path !== undefined) return p === m.path;
        if (m.path_separated_prefix !== undefined) return p === m.path_separated_prefix || p.startsWith(`${m.path_separated_prefix}/`);
        return m.case_sensitive === false ? p.toLowerCase().startsWith(String(m.prefix).toLowerCase()) : p.startsWith(m.prefix);
      });
      return found as Obj;
    };
    for (const p of ['/public', '/public/logo.png', '/publications', '/api', '/api/orders', '/API/Orders', '/orders', '/']) {
      const perFilter = envoyRoute(p).typed_per_filter_config?.['envoy.filters.http.ext_authz'] as Obj | undefined;
      const expected = routePolicy(defaults, perFilter?.check_settings?.context_extensions);
      const rule = table.match(p, 'orders.example.com');
      expect(rule >= 0 ? table.policies[rule] : defaults, p).to.deep.equal(expected);
    }
  });

  it('points the Istio ext_authz provider at the sidecar on 9191 through a localhost ServiceEntry', function () {
    const providers = meshConfig().extensionProviders as Obj[];
    const provider = providers.find((p) => p.envoyExtAuthzGrpc);
    expect(provider, 'envoyExtAuthzGrpc provider').to.not.equal(undefined);
    const grpcProvider = provider!.envoyExtAuthzGrpc;
    expect(grpcProvider.port).to.equal(hostPort(defaultOf('Sidecar:ExtAuthz:Address')).port);
    expect(grpcProvider.failOpen ?? false).to.equal(false);
    expect(grpcProvider.timeout).to.match(/^\d+(\.\d+)?(ms|s)$/);
    // Envoy's status_on_error defaults to 403: an outage of the sidecar would read as a denial.
    expect(grpcProvider.statusOnError).to.equal('503');

    const { host } = providerService(grpcProvider.service);
    const entry = ofKind('ServiceEntry').find((s) => (s.spec.hosts as string[]).includes(host));
    expect(entry, `ServiceEntry for ${host}`).to.not.equal(undefined);
    expect(entry!.spec.endpoints).to.deep.equal([{ address: '127.0.0.1' }]);
    expect(entry!.spec.resolution).to.equal('STATIC');
    expect(entry!.spec.ports).to.deep.include({ name: 'grpc', number: 9191, protocol: 'GRPC' });

    const policies = ofKind('AuthorizationPolicy');
    expect(policies).to.have.length.greaterThan(0);
    for (const p of policies) {
      expect(p.spec.action).to.equal('CUSTOM');
      expect(p.spec.provider.name).to.equal(provider!.name);
    }
    // The policy selects the workload the Deployment runs.
    expect(policies[0].spec.selector.matchLabels).to.deep.equal(deployment().spec.selector.matchLabels);
  });

  it('declares the provider\'s host once, in the root namespace, exported to every namespace', function () {
    // istiod resolves an unqualified provider host across all namespaces and fails with "found in
    // multiple namespaces" once two hold it; a provider it cannot build makes CUSTOM policies deny.
    // 127.0.0.1 is each pod's own sidecar, so one mesh-wide entry serves every namespace.
    const mesh = meshConfig();
    const rootNamespace = mesh.rootNamespace ?? 'istio-system';
    const grpcProvider = (mesh.extensionProviders as Obj[]).find((p) => p.envoyExtAuthzGrpc)!.envoyExtAuthzGrpc;
    const { namespace, host } = providerService(grpcProvider.service);
    const entries = ofKind('ServiceEntry').filter((s) => (s.spec.hosts as string[]).includes(host));
    expect(entries, `ServiceEntries for ${host}`).to.have.length(1);
    expect(entries[0].metadata.namespace).to.equal(rootNamespace);
    expect(entries[0].spec.exportTo).to.deep.equal(['*']);
    if (namespace !== undefined) expect(namespace, 'namespace in the provider service').to.equal(entries[0].metadata.namespace);
  });

  it('shows in docs/deployment.md the provider and the ServiceEntry the manifests declare', function () {
    const doc = readFileSync(path.join(repoRoot(), 'docs', 'deployment.md'), 'utf8');
    const snippets = yamlBlocks(doc).filter((b) => /^extensionProviders:/m.test(b));
    expect(snippets, 'extensionProviders snippets').to.have.length(1);
    expect((YAML.parse(snippets[0]) as Obj).extensionProviders).to.deep.equal(meshConfig().extensionProviders);
    const entry = ofKind('ServiceEntry')[0];
    expect(doc).to.contain(`hosts: [${(entry.spec.hosts as string[]).join(', ')}]`);
    expect(doc).to.contain(`exportTo: ${JSON.stringify(entry.spec.exportTo)}`);
  });
});
