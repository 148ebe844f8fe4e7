/**
 * Test-only admin API under `/_emulator/*` (§9.2), off unless the emulator was started with
 * `admin: true`: mint tokens, rotate keys, shift the clock, inject faults, set Conditional Access,
 * read the redacted request log and counters, reset.
 */
import { mintToken } from '../mint.js';
import { sendJson } from '../http.js';
import type { Exchange } from '../http.js';
import { isObject } from '../jwt.js';
import type { ConditionalAccessSpec, FaultSpec, MintRequest } from '../types.js';

function jsonBody(ex: Exchange): Record<string, unknown> | undefined {
  if (!ex.body.length) return {};
  try {
    const parsed = JSON.parse(ex.body.toString('utf8')) as unknown;
    return isObject(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** Dispatches `/_emulator/{action}`. */
export async function adminRoute(ex: Exchange, action: string): Promise<void> {
  const core = ex.core;
  const method = ex.req.method ?? 'GET';
  const body = jsonBody(ex);
  const bad = (message: string, status = 400): void => sendJson(ex, status, { error: 'bad_request', message });
  if (body === undefined) return bad('body must be a JSON object');
  const key = `${method} ${action}`;
  switch (key) {
    case 'POST tokens': {
      try {
        const token = await mintToken(core, body as unknown as MintRequest);
        return sendJson(ex, 200, { token });
      } catch (err) {
        return bad((err as Error).message);
      }
    }
    case 'POST keys/rotate':
      core.rotateKeys(body.dropOld === true);
      return sendJson(ex, 200, { activeKid: core.activeKid, kids: core.signingKeys.map((k) => k.kid) });
    case 'POST clock': {
      const offset = body.offsetSec ?? body.offset;
      if (typeof offset !== 'number' || !Number.isFinite(offset)) return bad('offsetSec must be a number');
      core.setClockOffset(offset);
      return sendJson(ex, 200, { offsetSec: offset, now: core.nowSec() });
    }
    case 'POST faults': {
      if (typeof body.route !== 'string') return bad('route is required');
      core.addFault(body as unknown as FaultSpec);
      return sendJson(ex, 200, { ok: true });
    }
    case 'DELETE faults':
      core.clearFaults();
      return sendJson(ex, 200, { ok: true });
    case 'POST conditional-access': {
      const acrs = body.unsatisfiedAcrs;
      const users = body.users;
      const strings = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
      if (!strings(acrs)) return bad('unsatisfiedAcrs must be an array of strings');
      if (users !== undefined && !strings(users)) return bad('users must be an array of strings');
      core.setConditionalAccess(body as unknown as ConditionalAccessSpec);
      return sendJson(ex, 200, { ok: true });
    }
    case 'DELETE conditional-access':
      core.setConditionalAccess(undefined);
      return sendJson(ex, 200, { ok: true });
    case 'GET requests':
      return sendJson(ex, 200, { requests: core.requests() });
    case 'GET counters':
      return sendJson(ex, 200, core.counters());
    case 'POST reset':
      core.reset();
      return sendJson(ex, 200, { ok: true });
    default:
      return sendJson(ex, 404, { error: 'not_found', message: `unknown admin route ${key}` });
  }
}
