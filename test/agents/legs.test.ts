/**
 * Agent legs seen from inside (the token acquirer in-process against the emulator): the client
 * assertion every agent leg sends IS the T1 the blueprint received, user_fic presents exactly the
 * T2 the agent received, and concurrent callers share one request per leg.
 */
import { expect } from 'chai';
import type { Dispatcher } from 'undici';
import { startEmulator, redactionFingerprint, type Emulator } from '../../emulator/index.js';
import { createTokenAcquirer } from '../../src/acquisition/acquirer.js';
import type { AcquireRequest, TokenAcquirer } from '../../src/pipeline/types.js';
import { captureLogger } from '../acquisition/fixtures.js';
import { apiOptions, emulatorAgent, emulatorConfig, tokenRequests } from '../acquisition/harness.js';

/** The access tokens of every token-endpoint response, in order (read from the wire by an interceptor). */
function recordTokenResponses(into: string[]): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (opts, handler) => {
    if (!String(opts.path).includes('/oauth2/v2.0/token')) return dispatch(opts, handler);
    const chunks: Buffer[] = [];
    const done = () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { access_token?: string };
        if (body.access_token) into.push(body.access_token);
      } catch {
        // error bodies are not recorded
      }
    };
    // Works with both handler styles undici may pass (onData/onComplete and onResponseData/onResponseEnd).
    const wrapped = new Proxy(handler, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        if (prop === 'onData') return (chunk: Buffer) => (chunks.push(Buffer.from(chunk)), (value as (c: Buffer) => boolean).call(target, chunk));
        if (prop === 'onResponseData') return (c: unknown, chunk: Buffer) => (chunks.push(Buffer.from(chunk)), (value as (a: unknown, c: Buffer) => void).call(target, c, chunk));
        if (prop === 'onComplete' || prop === 'onResponseEnd') return (...args: unknown[]) => (done(), (value as (...a: unknown[]) => void).apply(target, args));
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
    return dispatch(opts, wrapped);
  };
}

describe('agent legs in-process (assertion chaining and single-flight)', function () {
  this.timeout(20_000);
  let emu: Emulator;
  let acquirer: TokenAcquirer;
  let base: ReturnType<typeof emulatorAgent>;
  const issued: string[] = [];
  const logs = captureLogger();

  before(async () => {
    emu = await startEmulator();
    base = emulatorAgent(emu);
    const agent = base.compose(recordTokenResponses(issued));
    acquirer = createTokenAcquirer({ config: emulatorConfig(emu), agent, logger: logs.logger });
  });
  after(async () => {
    acquirer?.close();
    await base?.close();
    await emu?.close();
  });

  it('sends T1 as the client assertion of every agent leg and T2 as the user federated identity credential', async () => {
    const agent1 = emu.scenario.apps.agentIdentity1.appId;
    const upn = emu.scenario.users.agentUser1.upn;
    const before = tokenRequests(emu).length;
    const token = await acquirer.acquire({ options: apiOptions({ scopes: ['api://downstream/read'] }), agent: { agentIdentity: agent1, username: upn } });
    const legs = tokenRequests(emu).slice(before);
    expect(legs.map((l) => l.form.grant_type)).to.deep.equal(['client_credentials', 'client_credentials', 'user_fic']);
    expect(issued).to.have.length(3);
    const [t1, t2, t3] = issued;
    expect(token.token).to.equal(t3);
    expect(legs[0].form.fmi_path).to.equal(agent1);
    expect(legs[1].form.client_assertion).to.equal(`[redacted] ${redactionFingerprint(t1)}`);
    expect(legs[2].form.client_assertion).to.equal(`[redacted] ${redactionFingerprint(t1)}`);
    expect(legs[2].form.user_federated_identity_credential).to.equal(`[redacted] ${redactionFingerprint(t2)}`);
  });

  it('ten concurrent agent-user requests for one user make one request per leg', async () => {
    const agent2 = emu.scenario.apps.agentIdentity2.appId;
    const oid = emu.scenario.users.agentUser2.oid;
    const counters = emu.counters();
    const req: AcquireRequest = { options: apiOptions({ scopes: ['api://downstream/read'] }), agent: { agentIdentity: agent2, userId: oid } };
    const tokens = await Promise.all(Array.from({ length: 10 }, () => acquirer.acquire(req)));
    expect(new Set(tokens.map((t) => t.token)).size).to.equal(1);
    const now = emu.counters();
    expect((now['token:client_credentials'] ?? 0) - (counters['token:client_credentials'] ?? 0)).to.equal(2);
    expect((now['token:user_fic'] ?? 0) - (counters['token:user_fic'] ?? 0)).to.equal(1);
  });

  it('ForceRefresh re-runs only the final leg; T1 and T2 come from the cache', async () => {
    const agent2 = emu.scenario.apps.agentIdentity2.appId;
    const oid = emu.scenario.users.agentUser2.oid;
    const before = tokenRequests(emu).length;
    const options = apiOptions({ scopes: ['api://downstream/read'], acquireTokenOptions: { ...apiOptions().acquireTokenOptions, forceRefresh: true } });
    await acquirer.acquire({ options, agent: { agentIdentity: agent2, userId: oid } });
    expect(tokenRequests(emu).slice(before).map((l) => l.form.grant_type)).to.deep.equal(['user_fic']);
  });
});
