/**
 * Structured JSON logging (pino). Redaction by construction: fields that can carry a credential are
 * censored wherever they appear, and callers log identifiers (hashes, codes), never token strings.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/** Field names whose values are always replaced with "[redacted]", at any of the first three levels. */
const SECRET_FIELDS = [
  'authorization', 'Authorization', 'token', 'accessToken', 'access_token', 'refresh_token', 'id_token',
  'assertion', 'client_assertion', 'clientAssertion', 'secret', 'clientSecret', 'client_secret',
  'password', 'certificatePassword', 'privateKey', 'private_key', 'cookie', 'set-cookie',
  'x-identity-header', 'user_federated_identity_credential',
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

/** Creates the process logger. `destination` is for tests; production writes to stdout. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'entra-sidecar' },
      timestamp: pino.stdTimeFunctions.isoTime,
      messageKey: 'msg',
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: redactPaths(), censor: '[redacted]' },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
