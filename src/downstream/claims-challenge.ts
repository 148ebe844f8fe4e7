/**
 * Claims challenges from a downstream 401 (Continuous Access Evaluation, conditional access):
 * `WWW-Authenticate: Bearer error="insufficient_claims", claims="<base64 JSON>"`
 * (reference sidecar-http-api §5.7). The decoded JSON is what token acquisition sends as `claims`.
 */

/** Upper bound on a claims value we are willing to forward to Entra. */
const MAX_CLAIMS_LENGTH = 16 * 1024;

export interface AuthChallenge {
  /** Lower-case scheme. */
  readonly scheme: string;
  /** Lower-case parameter names, unquoted values. */
  readonly params: ReadonlyMap<string, string>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/** Parses one or more comma-separated challenges (RFC 9110 §11.6.1); token68 values are skipped. */
export function parseChallenges(header: string): AuthChallenge[] {
  const challenges: { scheme: string; params: Map<string, string> }[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = (): void => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TOKEN_CHAR.test(header[i])) i++;
    return header.slice(start, i);
  };
  while (i < n) {
    skipSpace();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const word = readToken();
    if (word === '') {
      i++; // not a token character: skip it rather than loop forever
      continue;
    }
    skipSpace();
    const current = challenges[challenges.length - 1];
    if (header[i] === '=' && header[i + 1] !== '=' && current !== undefined) {
      i++;
      skipSpace();
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i++];
        }
        i++; // closing quote
      } else {
        value = readToken();
      }
      current.params.set(word.toLowerCase(), value);
    } else if (header[i] === '=') {
      // token68 (`Basic abc==`) or a parameter with no challenge: skip to the next comma.
      while (i < n && header[i] !== ',') i++;
    } else {
      challenges.push({ scheme: word.toLowerCase(), params: new Map() });
      // A token68 right after the scheme (`Negotiate abc/+=`) is not a parameter list.
      const token68 = /^[A-Za-z0-9\-._~+/]+=*[ \t]*(?=,|$)/.exec(header.slice(i));
      if (token68) i += token68[0].length;
    }
  }
  return challenges;
}

/**
 * The claims JSON of a Bearer/PoP `insufficient_claims` challenge, or undefined when the header
 * carries none (or carries something that is not a JSON object, which is never forwarded).
 */
export function claimsFromWwwAuthenticate(header: string | readonly string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  const text = typeof header === 'string' ? header : header.join(', ');
  for (const challenge of parseChallenges(text)) {
    if (challenge.scheme !== 'bearer' && challenge.scheme !== 'pop') continue;
    if (challenge.params.get('error')?.toLowerCase() !== 'insufficient_claims') continue;
    const raw = challenge.params.get('claims');
    if (raw === undefined || raw.length === 0 || raw.length > MAX_CLAIMS_LENGTH) continue;
    const json = decodeClaims(raw.trim());
    if (json !== undefined) return json;
  }
  return undefined;
}

/** Claims are base64(url) JSON per the CAE spec; some services send the JSON itself. */
function decodeClaims(raw: string): string | undefined {
  const candidates = raw.startsWith('{') ? [raw] : [Buffer.from(raw.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8')];
  for (const candidate of candidates) {
    try {
      const parsed: unknown = JSON.parse(candidate);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return candidate;
    } catch {
      // not JSON: no challenge we can act on
    }
  }
  return undefined;
}
