/**
 * Structured JSON logging (pino). Redaction by construction: fields that can carry a credential are
 * censored wherever they appear, and callers log identifiers (hashes, codes), never token strings.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/**
 * Field names whose values are always replaced with "[redacted]", at any of the first three levels
 * (a fourth level of wildcards made every redacted line ~50 % dearer; nothing logs objects that deep).
 */
const SECRET_FIELDS = [
  'authorization', 'Authorization', 'AUTHORIZATION', 'authorizationHeader', 'token', 'accessToken', 'access_token',
  'refresh_token', 'refreshToken', 'id_token', 'idToken',
  'assertion', 'client_assertion', 'clientAssertion', 'secret', 'clientSecret', 'client_secret',
  'password', 'certificatePassword', 'privateKey', 'private_key', 'keyPem', 'base64EncodedValue',
  'cookie', 'Cookie', 'set-cookie', 'x-identity-header', 'user_federated_identity_credential',
];

function redactPaths(): string[] {
  const paths: string[] = [];
  for (const f of SECRET_FIELDS) {
    const key = /^[A-Za-z_$][\w$]*$/.test(f) ? f : `["${f}"]`;
    const dotted = key.startsWith('[') ? key : `.${key}`;
    paths.push(key.startsWith('[') ? key : f, `*${dotted}`, `*.*${dotted}`);
  }
  return paths;
}

/** A JWS or JWE anywhere in a text (an upstream error can echo one back). */
const TOKEN_LIKE = /eyJ[\w-]*(?:\.[\w-]*){2,4}/g;

/** Longest text redactTokens looks at: the pattern backtracks (quadratic on `eyJeyJ…`), so it never sees more. */
const MAX_REDACTED_TEXT = 8192;

/**
 * `text` cut to its first `max` characters, with "…" to show it was cut. Never between the halves
 * of a surrogate pair: a lone half has no UTF-8 form, and a clipped name can reach a proto3 string
 * (an ext_authz deny's status.message), which Envoy refuses unless it is valid UTF-8.
 */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = isHighSurrogate(text.charCodeAt(max - 1)) ? max - 1 : max;
  return `${text.slice(0, end)}…`;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** `text` (at most its first 8,192 characters) with anything token-shaped replaced by "[redacted]". */
export function redactTokens(text: string): string {
  return clip(text, MAX_REDACTED_TEXT).replace(TOKEN_LIKE, '[redacted]');
}

/** An error's name and message for a log line: token-shaped text cut out, at most 500 characters. */
export function safeCause(cause: Error): string {
  return clip(redactTokens(`${cause.name}: ${cause.message}`), 500);
}

/**
 * Fields whose text can carry what a caller sent (an API name or scope from the URL, a path, an
 * upstream error's words): anything token-shaped in them is cut out before a line is written, so a
 * token pasted into a path or override never reaches the logs, whichever line quotes it.
 */
const TEXT_FIELDS = ['detail', 'reason', 'path', 'requestId'] as const;

function redactTextFields(fields: Record<string, unknown>): Record<string, unknown> {
  let out = fields;
  for (const name of TEXT_FIELDS) {
    const value = fields[name];
    if (typeof value === 'string' && value.includes('eyJ')) {
      if (out === fields) out = { ...fields }; // the caller's object stays as it was
      out[name] = redactTokens(value);
    }
  }
  return out;
}

/**
 * A logger over the same stream, shape and redaction as `logger` that writes whatever the configured
 * level, `None` (silent) included: for the few lines an operator must always be able to find, as the
 * listening line is (the reason a start failed, a crash, a `SECURITY:` warning). A pino child may set
 * a level below its parent's.
 */
export function unconditionalLogger(logger: Logger): Logger {
  return logger.child({}, { level: 'trace' });
}

/** Creates the process logger. `destination` is for tests; production writes to stdout. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'entra-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      messageKey: 'msg',
      formatters: { level: (label) => ({ level: label }), log: redactTextFields },
      redact: { paths: redactPaths(), censor: '[redacted]' },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
