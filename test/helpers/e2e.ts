/**
 * Wiring for end-to-end tests: environment variables that point the built sidecar at a running
 * emulator (nothing else configures it), and small HTTP helpers.
 */
import * as grpc from '@grpc/grpc-js';
import { startEmulator, type Emulator } from '../../emulator/index.js';
import { startSidecar, type RunningSidecar } from './sidecar.js';

/** Env for a sidecar whose AzureAd app is the emulator's sidecar API, all listeners on port 0. */
export function sidecarEnv(emu: Emulator, extra: Record<string, string> = {}): Record<string, string> {
  const s = emu.scenario;
  return {
    AzureAd__Instance: emu.instance,
    AzureAd__TenantId: s.tenants.primary.id,
    AzureAd__ClientId: s.apps.sidecarApi.appId,
    AzureAd__ClientCredentials__0__SourceType: 'ClientSecret',
    AzureAd__ClientCredentials__0__ClientSecret: s.apps.sidecarApi.secrets[0].value,
    Sidecar__Outbound__CaFile: emu.caFile,
    Sidecar__Http__Url: 'http://127.0.0.1:0',
    Sidecar__ExtAuthz__Address: '127.0.0.1:0',
    Sidecar__Management__Url: 'http://127.0.0.1:0',
    Sidecar__LogLevel: 'debug',
    ...extra,
  };
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
  json<T = any>(): T;
}

/** One HTTP request with fetch (loopback only). */
export async function call(url: string, init: RequestInit & { token?: string } = {}): Promise<HttpAnswer> {
  const headers = new Headers(init.headers);
  if (init.token !== undefined) headers.set('authorization', `Bearer ${init.token}`);
  const res = await fetch(url, { ...init, headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

/** Every secret value of a scenario plus the given tokens: none may appear in any log line. */
export function secretsOf(emu: Emulator, extra: string[] = []): string[] {
  const out: string[] = [...extra];
  for (const app of Object.values(emu.scenario.apps)) {
    for (const s of app.secrets) out.push(s.value);
    for (const c of app.certificates) if (c.keyPem) out.push(c.keyPem.split('\n').slice(1, 3).join('\n'));
  }
  out.push(emu.appServiceSecret);
  return out.filter((s) => s.length >= 8);
}

/** Asserts that no line contains any secret (and names which one, by index, if it does). */
/**
 * Slices of a secret that give it away: its last 40 characters, and for a JWT the first 40 of its
 * claims segment too, so a token cut short after its header (a truncated path) is still caught.
 */
function probesOf(secret: string): string[] {
  const probes = [secret.length > 40 ? secret.slice(secret.length - 40) : secret];
  const claims = secret.startsWith('eyJ') ? secret.split('.')[1] : undefined;
  if (claims !== undefined && claims.length >= 40) probes.push(claims.slice(0, 40));
  return probes;
}

export function assertNoSecrets(lines: readonly string[], secrets: readonly string[]): void {
  for (const line of lines) {
    for (let i = 0; i < secrets.length; i++) {
      // Compare a distinctive slice too, so a truncated token is still caught.
      const s = secrets[i];
      for (const probe of probesOf(s)) {
        if (line.includes(probe)) throw new Error(`secret #${i} (${s.slice(0, 6)}…) appears in a log line: ${line.slice(0, 200).replace(probe, '<here>')}`);
      }
    }
  }
}

/**
 * Registers mocha hooks for a suite that needs one emulator and several differently configured
 * sidecars: `start(extra)` spawns one with `sidecarEnv(emu, {...base(emu), ...extra})`; all of them
 * are stopped, and the emulator closed, after the suite.
 */
export function withEmulatorAndSidecars(base: (emu: Emulator) => Record<string, string> = () => ({})): {
  emu(): Emulator;
  start(extra?: Record<string, string>): Promise<RunningSidecar>;
} {
  let emu: Emulator | undefined;
  const running: RunningSidecar[] = [];
  before(async () => {
    emu = await startEmulator();
  });
  after(async () => {
    for (const s of running) await s.stop();
    await emu?.close();
  });
  return {
    emu: () => emu!,
    async start(extra = {}) {
      const s = await startSidecar(sidecarEnv(emu!, { ...base(emu!), ...extra }));
      running.push(s);
      return s;
    },
  };
}

/** grpc.health.v1.Health/Check with a hand-rolled codec (the messages are two tiny protobufs). */
export function healthCheck(address: string, service: string): Promise<string> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const encode = (s: string) => {
    const b = Buffer.from(s);
    return b.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, b.length]), b]);
  };
  const decode = (buf: Buffer) => (buf.length >= 2 && buf[0] === 0x08 ? ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'][buf[1]] : 'UNKNOWN');
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest('/grpc.health.v1.Health/Check', encode, (b: Buffer) => b, service, { deadline: Date.now() + 2000 }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(decode(res as Buffer));
    });
  });
}
