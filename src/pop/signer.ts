/**
 * The sidecar's own proof-of-possession key and the signer `/DownstreamApi*` uses when an API sets
 * `SignHttpRequest` (beyond Microsoft's sidecar, which only passes a caller's `PopPublicKey`
 * through): the app token is requested with `req_cnf` naming this key, and every downstream
 * request carries `Authorization: PoP <SHR>` signed with it (shr.ts).
 *
 * The key comes from `Sidecar:Pop:KeyFile` (PEM, RSA ≥ 2048 bits or EC P-256; read at start so a
 * bad file stops the process) or is generated once per process on first use.
 */
import { createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { SidecarError } from '../errors.js';
import type { EffectiveApiOptions } from '../pipeline/types.js';
import { jwkThumbprint, reqCnfFor, signShr, publicMembers, type ShrSigningKey } from './shr.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** Signs downstream requests with the sidecar's PoP key. */
export interface HttpRequestSigner {
  /** `req_cnf` naming the key (base64url `{"kid": thumbprint}`), for the token request. */
  reqCnf(): Promise<string>;
  /** The SHR for one request carrying `accessToken` (a token bound to this key). */
  sign(accessToken: string, method: string, url: URL): Promise<string>;
  /** The options with `PopPublicKey` set to this key, so the acquirer binds the token to it. */
  bindOptions(options: EffectiveApiOptions): Promise<EffectiveApiOptions>;
}

/** Something (the token acquirer) that carries the process's signer. */
export interface WithHttpRequestSigner {
  readonly httpRequestSigner: HttpRequestSigner;
}

/** The signer an object carries, if it carries one. */
export function httpRequestSignerOf(holder: object): HttpRequestSigner | undefined {
  const s = (holder as Partial<WithHttpRequestSigner>).httpRequestSigner;
  return s !== undefined && typeof s.sign === 'function' ? s : undefined;
}

/** The SHR algorithm for a key; throws SidecarError('misconfigured') for keys we do not sign with. */
function algorithmOf(privateKey: KeyObject): ShrSigningKey['alg'] {
  const details = privateKey.asymmetricKeyDetails;
  if (privateKey.asymmetricKeyType === 'rsa') {
    if ((details?.modulusLength ?? 0) < 2048) throw new SidecarError('misconfigured', 'Sidecar:Pop:KeyFile: an RSA key must have at least 2048 bits.');
    return 'RS256';
  }
  if (privateKey.asymmetricKeyType === 'ec' && details?.namedCurve === 'prime256v1') return 'ES256';
  throw new SidecarError('misconfigured', 'Sidecar:Pop:KeyFile must hold an RSA (≥ 2048 bits) or EC P-256 private key.');
}

async function signingKeyOf(privateKey: KeyObject): Promise<ShrSigningKey> {
  const alg = algorithmOf(privateKey);
  const publicJwk = publicMembers(createPublicKey(privateKey).export({ format: 'jwk' }));
  return { privateKey, publicJwk, thumbprint: await jwkThumbprint(publicJwk), alg };
}

/** Reads a PEM private key; throws SidecarError('misconfigured') with a safe message. */
export function readPopKeyFile(path: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    throw new SidecarError('misconfigured', `Sidecar:Pop:KeyFile '${path}' cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}).`, { cause: err });
  }
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new SidecarError('misconfigured', `Sidecar:Pop:KeyFile '${path}' does not hold a PEM private key.`, { cause: err });
  }
}

/** Creates the signer; with `keyFile` the key is read now (fail fast), otherwise generated on first use. */
export function createHttpRequestSigner(keyFile: string | undefined): HttpRequestSigner {
  const loaded = keyFile !== undefined ? readPopKeyFile(keyFile) : undefined;
  if (loaded) algorithmOf(loaded);
  let key: Promise<ShrSigningKey> | undefined;
  const signingKey = (): Promise<ShrSigningKey> => {
    if (!key) {
      key = loaded
        ? signingKeyOf(loaded)
        : generateKeyPairAsync('rsa', { modulusLength: 2048 }).then(({ privateKey }) => signingKeyOf(privateKey));
      key.catch(() => {
        key = undefined;
      });
    }
    return key;
  };
  const signer: HttpRequestSigner = {
    async reqCnf() {
      return reqCnfFor((await signingKey()).thumbprint);
    },
    async sign(accessToken, method, url) {
      return signShr(await signingKey(), { accessToken, method, url });
    },
    async bindOptions(options) {
      const popPublicKey = await signer.reqCnf();
      return { ...options, acquireTokenOptions: { ...options.acquireTokenOptions, popPublicKey, popClaim: undefined } };
    },
  };
  return signer;
}
