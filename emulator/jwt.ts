/**
 * Compact JWS helpers. Signing is hand-rolled on node:crypto (not jose) so that the emulator
 * can also produce the deliberately broken tokens validators must reject (alg none, HS256 keyed
 * with the public key, unknown keys). Verification of what clients send uses jose.
 */
import { createHmac, sign as rsaSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { b64url } from './pki.js';

export type JwtHeader = Record<string, unknown>;
export type JwtPayload = Record<string, unknown>;

/** How a JWS is signed. */
export type JwsSigner =
  | { alg: 'RS256'; key: KeyObject }
  | { alg: 'PS256'; key: KeyObject }
  | { alg: 'none' }
  | { alg: 'HS256'; secret: Buffer | string };

/**
 * Serialises and signs `payload` as a compact JWS (a string is the payload's JSON text, signed as
 * is); `header.alg` is set from the signer unless already present.
 */
export function signJws(header: JwtHeader, payload: JwtPayload | string, signer: JwsSigner): string {
  const fullHeader = { alg: signer.alg, ...header };
  const input = `${b64url(JSON.stringify(fullHeader))}.${b64url(typeof payload === 'string' ? payload : JSON.stringify(payload))}`;
  switch (signer.alg) {
    case 'none':
      return `${input}.`;
    case 'HS256':
      return `${input}.${b64url(createHmac('sha256', signer.secret).update(input).digest())}`;
    case 'RS256':
      return `${input}.${b64url(rsaSign('sha256', Buffer.from(input), signer.key))}`;
    case 'PS256':
      return `${input}.${b64url(rsaSign('sha256', Buffer.from(input), { key: signer.key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 }))}`;
  }
}

/** A decoded (not verified) compact JWS. */
export interface DecodedJws {
  header: JwtHeader;
  payload: JwtPayload;
}

/** Decodes a compact JWS without verifying it; undefined when it is not a 3-part JWS with JSON objects. */
export function decodeJws(token: string): DecodedJws | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')) as unknown;
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as unknown;
    if (!isObject(header) || !isObject(payload)) return undefined;
    return { header, payload };
  } catch {
    return undefined;
  }
}

/** True for a plain JSON object. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
