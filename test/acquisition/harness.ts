/**
 * Shared set-up for the emulator-backed acquisition tests: a config pointing at a running emulator,
 * an outbound agent trusting its CA, inbound user tokens shaped as the validator would hand them
 * over, and small helpers to read what the emulator received.
 */
import { decodeJwt, decodeProtectedHeader } from 'jose';
import type { Dispatcher } from 'undici';
import type { Emulator, RecordedRequest } from '../../emulator/types.js';
import type { CredentialDescription, DownstreamApiOptions, SidecarConfig } from '../../src/config/types.js';
import { createOutboundAgent } from '../../src/net/outbound.js';
import type { EffectiveApiOptions, ValidatedToken } from '../../src/pipeline/types.js';
import { acquireTokenOptions, credential, downstreamApi, makeConfig, type ConfigOptions } from './fixtures.js';

/** Config for the scenario's sidecar app (the agent blueprint) against `emu`. */
export function emulatorConfig(emu: Emulator, over: ConfigOptions = {}): SidecarConfig {
  const app = emu.scenario.apps.sidecarApi;
  return makeConfig({
    instance: emu.instance,
    tenantId: emu.scenario.tenants.primary.id,
    clientId: app.appId,
    clientCredentials: [credential({ sourceType: 'ClientSecret', clientSecret: app.secrets[0].value })],
    caFile: emu.caFile,
    ...over,
  });
}

/** An outbound agent that trusts the emulator's CA. */
export function emulatorAgent(emu: Emulator, timeoutMs = 5000): Dispatcher {
  return createOutboundAgent({ extraCaFiles: [emu.caFile], connectTimeoutMs: 2000, timeoutMs });
}

/** Effective options as api-options.ts would produce them. */
export function apiOptions(over: Partial<DownstreamApiOptions> & { apiName?: string } = {}): EffectiveApiOptions {
  const { apiName, ...rest } = over;
  return { ...downstreamApi({ acquireTokenOptions: acquireTokenOptions(), ...rest }), apiName: apiName ?? 'test' };
}

/** A user token for the sidecar API, shaped as the validator returns it. */
export async function userToken(emu: Emulator, user?: string): Promise<ValidatedToken> {
  const raw = await emu.mint({ kind: 'user', audience: emu.scenario.apps.sidecarApi.appId, scp: 'access_as_user', ...(user ? { user } : {}) });
  const claims = decodeJwt(raw);
  return {
    raw,
    jws: raw,
    header: decodeProtectedHeader(raw) as ValidatedToken['header'],
    claims,
    version: claims.ver === '1.0' ? '1.0' : '2.0',
    tenantId: String(claims.tid),
    expiresAt: Number(claims.exp),
  };
}

/** Token-endpoint requests the emulator recorded. */
export function tokenRequests(emu: Emulator): RecordedRequest[] {
  return emu.requests().filter((r) => r.route === 'token');
}

/** The emulator's token-route counter. */
export function tokenCount(emu: Emulator): number {
  return emu.counters().token ?? 0;
}

export function secretCredential(value: string): CredentialDescription {
  return credential({ sourceType: 'ClientSecret', clientSecret: value });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
