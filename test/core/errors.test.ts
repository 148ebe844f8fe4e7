import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ERROR_TABLE, SidecarError, toSidecarError, wwwAuthenticate, type ErrorCode } from '../../src/errors.js';
import { renderErrorReference } from '../../src/error-docs.js';
import { repoRoot } from '../helpers/sidecar.js';

describe('error codes', () => {
  it('a SidecarError records no stack trace (an answer, not a fault), leaves Error.stackTraceLimit as it was, and keeps the stack of the fault it wraps', () => {
    const before = Error.stackTraceLimit;
    const err = new SidecarError('credential_missing');
    expect(err.stack).to.equal('SidecarError: No bearer token was sent.');
    expect(err.stack).to.not.include(' at ');
    expect(Error.stackTraceLimit).to.equal(before);
    const fault = new TypeError('boom');
    const wrapped = new SidecarError('internal', undefined, { cause: fault });
    expect(wrapped.cause).to.equal(fault);
    expect(fault.stack).to.include(' at ');
    expect(new Error('plain').stack, 'other errors keep theirs').to.include(' at ');
  });

  it('docs/errors.md is exactly what the error table renders', () => {
    const committed = readFileSync(path.join(repoRoot, 'docs', 'errors.md'), 'utf8');
    expect(committed, 'run `npm run docs`').to.equal(renderErrorReference());
  });

  it('docs/errors.md names the test that keeps it in step, and that test is this file', () => {
    const committed = readFileSync(path.join(repoRoot, 'docs', 'errors.md'), 'utf8');
    const named = /(test\/\S+\.test\.ts) keeps it in step/.exec(committed)?.[1];
    expect(named).to.equal('test/core/errors.test.ts');
    expect(existsSync(path.join(repoRoot, named!))).to.equal(true);
  });

  it('docs/errors.md names the HTTP answers that carry no code in their body, and the process failures', () => {
    const committed = readFileSync(path.join(repoRoot, 'docs', 'errors.md'), 'utf8');
    const intro = committed.slice(0, committed.indexOf('| code |'));
    // The answers without a ProblemDetails body (src/http/server.ts, routes.ts, problem.ts).
    for (const answer of ['401 challenges', '404 and 405', '`caller_not_loopback` 403', '`host_not_allowed`', '`request_from_browser` 403', '408', '431', '`IDW10203: …`']) {
      expect(intro, answer).to.include(answer);
    }
    for (const code of ['config_invalid', 'start_failed', 'uncaught_exception', 'unhandled_rejection']) {
      expect(committed, code).to.match(new RegExp(`^\\| \`${code}\` \\| (1|70) \\|`, 'm'));
    }
  });

  it('maps every code to a defined Envoy status, a non-zero gRPC code and a 4xx/5xx HTTP status', () => {
    for (const code of Object.keys(ERROR_TABLE) as ErrorCode[]) {
      const s = ERROR_TABLE[code];
      expect(s.grpcCode, code).to.be.greaterThan(0);
      expect(s.httpStatus, code).to.be.within(400, 599);
      expect([400, 401, 403, 404, 405, 413, 431, 500, 503], code).to.include(s.envoyStatus);
    }
  });

  it('hides the detail of codes that are not exposed', () => {
    const e = new SidecarError('internal', 'secret-looking detail from a library');
    expect(e.publicMessage).to.equal('An unexpected error occurred.');
    expect(new SidecarError('token_expired', "The token expired at '2026-01-01'").publicMessage).to.equal("The token expired at '2026-01-01'");
  });

  it('wraps unknown throwables as internal without keeping their message public', () => {
    const e = toSidecarError(new Error('boom: client_secret=abc'));
    expect(e.code).to.equal('internal');
    expect(e.publicMessage).to.not.include('abc');
  });

  it('builds RFC 6750 challenges for each kind', () => {
    expect(wwwAuthenticate(new SidecarError('credential_missing'))).to.equal('Bearer');
    expect(wwwAuthenticate(new SidecarError('token_signature_invalid', 'The signature is invalid'))).to.equal('Bearer error="invalid_token", error_description="The signature is invalid"');
    expect(wwwAuthenticate(new SidecarError('insufficient_scope', 'x', { scope: 'Data.Read' }))).to.equal('Bearer error="insufficient_scope", scope="Data.Read"');
    const claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}';
    expect(wwwAuthenticate(new SidecarError('acquisition_ui_required', 'x', { claims }))).to.equal(`Bearer error="insufficient_claims", claims="${Buffer.from(claims).toString('base64')}"`);
    expect(wwwAuthenticate(new SidecarError('internal'))).to.equal(undefined);
  });

  it('never lets CR, LF or quotes break out of a challenge, and keeps to RFC 6750\'s characters', () => {
    const v = wwwAuthenticate(new SidecarError('token_malformed', 'bad "quote"\r\nInjected: yes \\ é'))!;
    expect(v).to.equal('Bearer error="invalid_token", error_description="bad ?quote???Injected: yes ? ?"');
  });
});
