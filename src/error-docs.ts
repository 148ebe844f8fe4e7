/**
 * Renders docs/errors.md from ERROR_TABLE, so the documentation cannot drift from the code
 * (test/core/errors.test.ts compares the committed file with this output).
 */
import { ERROR_TABLE, PROCESS_FAILURES, type ErrorCode, type ProcessFailureCode } from './errors.js';

const GRPC_NAMES: Readonly<Record<number, string>> = {
  3: 'INVALID_ARGUMENT', 5: 'NOT_FOUND', 7: 'PERMISSION_DENIED', 8: 'RESOURCE_EXHAUSTED', 12: 'UNIMPLEMENTED', 13: 'INTERNAL', 14: 'UNAVAILABLE', 16: 'UNAUTHENTICATED',
};

/** The markdown error-code reference. */
export function renderErrorReference(): string {
  const rows = (Object.keys(ERROR_TABLE) as ErrorCode[]).map((code) => {
    const s = ERROR_TABLE[code];
    return `| \`${code}\` | ${s.httpStatus} | ${s.grpcCode} ${GRPC_NAMES[s.grpcCode] ?? ''} | ${s.envoyStatus} | ${s.challenge} | ${s.expose ? ((s as { exposeAtEnvoy?: false }).exposeAtEnvoy === false ? 'HTTP API only' : 'yes') : 'no'} | ${s.logLevel} | ${s.message} |`;
  });
  const processRows = (Object.keys(PROCESS_FAILURES) as ProcessFailureCode[]).map((code) => {
    const s = PROCESS_FAILURES[code];
    return `| \`${code}\` | ${s.exitCode} | ${s.message} | ${s.meaning} |`;
  });
  return [
    '# Error codes',
    '',
    '<!-- Generated from src/errors.ts by `npm run docs`; test/core/errors.test.ts keeps it in step. -->',
    '',
    'Every failure the sidecar reports carries one of these stable codes in its log line. On the HTTP',
    'API an answer with a ProblemDetails body (`application/problem+json`) carries it in the `code`',
    'member. The answers Microsoft\'s sidecar sends without a body have none here either, so their code',
    'is in the log line only: 401 challenges from token validation (only `WWW-Authenticate`, a PoP',
    'failure included) and the refusals before routing (`caller_not_loopback` 403, `host_not_allowed`',
    '400, `request_from_browser` 403). 404 and 405 have an empty body and no log line, and so has a',
    'request Node\'s HTTP parser rejects before any route runs (malformed: 400; headers too slow: 408;',
    'headers too large: 431). `GET /Validate` with a valid token that lacks the `AzureAd:Scopes` scope',
    'answers 403 `text/plain` with Microsoft\'s `IDW10203: …` message, and no code.',
    '',
    'ext_authz puts the code in the denied response\'s JSON',
    'body `{"code": …, "message": …}` and uses the gRPC code in `CheckResponse.status` (a deny is always a',
    'successful RPC). "detail shown" says whether the specific detail may reach the caller; otherwise',
    'the caller sees the message below and the detail goes to the log. "HTTP API only": Entra\'s own',
    'description (which names the sidecar\'s app id, tenant and trace ids) is shown to the app on the',
    'loopback HTTP API, as Microsoft\'s sidecar does, but never in an Envoy deny, which any client behind',
    'the proxy reads.',
    '',
    '| code | HTTP status | ext_authz status.code | Envoy HTTP status | WWW-Authenticate | detail shown | log level | message |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    'WWW-Authenticate kinds: `bearer` → `Bearer` (no credential was sent); `invalid_token` →',
    '`Bearer error="invalid_token", error_description="…"`; `insufficient_scope` →',
    '`Bearer error="insufficient_scope", scope="…"` (`scope` lists the required scopes; required app',
    'roles are named in the message only, since a client cannot request them); `insufficient_claims` →',
    '`Bearer error="insufficient_claims", claims="<base64 claims JSON>"` (conditional-access challenge),',
    'or a plain `Bearer` when there are no claims to step up to. Attribute values keep to the characters',
    'RFC 6750 §3 allows (printable ASCII but `"` and `\\`): a description that echoes token content (an',
    'audience, an issuer) shows any other character as `?`. On the HTTP API, ProblemDetails answers',
    'carry `WWW-Authenticate` only for a claims challenge (Microsoft\'s carry none).',
    '',
    '## When the process cannot start or go on',
    '',
    'These answer no caller. Each is one JSON log line with `"level":"fatal"` and `code`, written whatever',
    'the log level (`Logging__LogLevel__Default=None` included), like the listening line; then the',
    'process exits with the code below.',
    '',
    '| code | exit code | msg | meaning |',
    '|---|---|---|---|',
    ...processRows,
    '',
  ].join('\n');
}
