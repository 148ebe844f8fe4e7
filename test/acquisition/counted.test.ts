/**
 * The acquisition metrics wrapper (src/acquisition/counted.ts) the sidecar puts around the engine:
 * it must pass the synchronous warm path through (a wrapper without it once sent every warm request
 * down the asynchronous path) and count what either path answers.
 */
import { expect } from 'chai';
import { countAcquisitions } from '../../src/acquisition/counted.js';
import { SidecarError } from '../../src/errors.js';
import type { AcquiredToken, AcquireRequest, TokenAcquirer } from '../../src/pipeline/types.js';
import { downstreamApi } from './fixtures.js';

describe('acquisition metrics wrapper', function () {
  const token: AcquiredToken = Object.freeze({ scheme: 'Bearer', token: 'downstream', expiresOn: 0 });
  const appReq = { options: { ...downstreamApi({ scopes: ['api://x/.default'], requestAppToken: true }), apiName: 'x' } } as AcquireRequest;

  it('passes cached() through and counts its hits, and counts acquire() outcomes', async function () {
    let warm: AcquiredToken | undefined = token;
    let fail = false;
    const engine: TokenAcquirer = {
      cached: () => warm,
      acquire: () => (fail ? Promise.reject(new SidecarError('acquisition_rejected')) : Promise.resolve(token)),
      close() {},
    };
    const counted: string[] = [];
    const wrapped = countAcquisitions(engine, { countTokenAcquisition: (flow, outcome) => void counted.push(`${flow}:${outcome}`) });
    expect(wrapped.cached(appReq)).to.equal(token);
    warm = undefined;
    expect(wrapped.cached(appReq), 'a miss is not an acquisition').to.equal(undefined);
    expect(await wrapped.acquire(appReq)).to.equal(token);
    fail = true;
    let code = '';
    await wrapped.acquire(appReq).catch((e: SidecarError) => (code = e.code));
    expect(code).to.equal('acquisition_rejected');
    expect(counted).to.deep.equal(['client_credentials:ok', 'client_credentials:ok', 'client_credentials:acquisition_rejected']);
  });
});
