/**
 * The Kubernetes and Istio examples in k8s/ must match the sidecar's defaults (ports, probe paths),
 * run it as a native sidecar, grant nothing privileged and point Istio's provider at 9191 through
 * one mesh-wide ServiceEntry; docs/deployment.md must show the same provider.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { defaultOf } from '../../src/config/defaults.js';
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
