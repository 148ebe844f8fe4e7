/**
 * Entra issuer rules (Microsoft.IdentityModel AadIssuerValidator; reference sidecar-http-api §4,
 * entra-protocol §3.2–3.3). Issuers come from the v1/v2 metadata documents, which carry the literal
 * `{tenantid}` for common/organizations and the tenant GUID otherwise, so no host is hard-coded here.
 */
import { SidecarError } from '../errors.js';
import { safeName } from './decryption.js';

export const TENANT_ID_TEMPLATE = '{tenantid}';
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True for a GUID-shaped tenant id. */
export function isGuid(value: string): boolean {
  return GUID.test(value);
}

/** Which metadata issuer form a token's `iss` matched. */
export type IssuerForm = '1.0' | '2.0';

export interface IssuerTemplates {
  readonly v1Issuer: string;
  readonly v2Issuer: string;
}

function fill(template: string, tid: string): string {
  return template.includes(TENANT_ID_TEMPLATE) ? template.split(TENANT_ID_TEMPLATE).join(tid) : template;
}

/**
 * `fill(template, tid) === value`, without building the filled string when `template` has one
 * `{tenantid}` (every Entra issuer): this runs for every token verified. With one slot, `value` must
 * have the template's shape (matchesShape) and exactly `tid` in the slot.
 */
export function isFilled(template: string, tid: string, value: string): boolean {
  const at = template.indexOf(TENANT_ID_TEMPLATE);
  if (at < 0) return template === value;
  if (tid === '' || template.includes(TENANT_ID_TEMPLATE, at + TENANT_ID_TEMPLATE.length)) return fill(template, tid) === value;
  return value.length === template.length - TENANT_ID_TEMPLATE.length + tid.length && value.startsWith(tid, at) && matchesShape(template, value);
}

/** Whether `iss` has the shape of `template` with any tenant in the `{tenantid}` slot. */
function matchesShape(template: string, iss: string): boolean {
  const at = template.indexOf(TENANT_ID_TEMPLATE);
  if (at < 0) return false;
  const prefix = template.slice(0, at);
  const suffix = template.slice(at + TENANT_ID_TEMPLATE.length);
  return iss.length > prefix.length + suffix.length && iss.startsWith(prefix) && iss.endsWith(suffix);
}

/**
 * Whether `tid` is the first path segment of `iss`, where every Entra issuer names its tenant
 * (`https://login.microsoftonline.com/{tid}/v2.0`, `https://sts.windows.net/{tid}/`; entra-protocol
 * §3.2 rule 5). Compares in place: this runs for every token verified.
 */
export function namesTenant(iss: string, tid: string): boolean {
  const scheme = iss.indexOf('://');
  const path = iss.indexOf('/', scheme < 0 ? 0 : scheme + 3);
  if (path < 0 || tid === '') return false;
  const end = path + 1 + tid.length;
  return iss.startsWith(tid, path + 1) && (end === iss.length || iss.charCodeAt(end) === 0x2f);
}

/**
 * The tenant rule once `iss` matched `template` (filled with `tid`): `tid` must be a tenant GUID, and
 * the tenant the issuer names. A `{tenantid}` slot holds exactly `tid` already (isFilled); a concrete
 * issuer (single tenant, or a fixed ValidIssuers entry) must name it as its tenant segment, so a `tid`
 * of `v2.0` or the host, which merely occur in the issuer, is refused.
 */
function checkTenant(template: string, iss: string, tid: string, tidIsGuid: boolean): void {
  if (!tidIsGuid) throw new SidecarError('token_tenant_mismatch', "The token's 'tid' claim is not a tenant id");
  if (!template.includes(TENANT_ID_TEMPLATE) && !namesTenant(iss, tid)) {
    throw new SidecarError('token_tenant_mismatch', `The token's 'tid' does not match the issuer '${safeName(iss)}'`);
  }
}

/**
 * Validates `iss` against the token's `tid`. Configured `validIssuers` (each may carry `{tenantid}`)
 * are accepted besides the default rule, as Microsoft.Identity.Web's AadIssuerValidator checks them
 * first and then falls back to the metadata's issuer. Whichever matched, `tid` must be a GUID and the
 * issuer's tenant (checkTenant). Returns which form matched. Throws token_issuer_invalid or
 * token_tenant_mismatch.
 */
export function validateIssuer(iss: unknown, tid: unknown, templates: IssuerTemplates, validIssuers: readonly string[]): IssuerForm {
  if (typeof iss !== 'string' || iss === '') throw new SidecarError('token_issuer_invalid', 'The token has no issuer');
  if (typeof tid !== 'string' || tid === '') throw new SidecarError('token_tenant_mismatch', "The token has no 'tid' claim");
  const tidIsGuid = isGuid(tid);

  for (const candidate of validIssuers) {
    if (!tidIsGuid && candidate.includes(TENANT_ID_TEMPLATE)) continue;
    if (isFilled(candidate, tid, iss)) {
      checkTenant(candidate, iss, tid, tidIsGuid);
      return iss.endsWith('/v2.0') ? '2.0' : '1.0';
    }
  }

  for (const [form, template] of [['2.0', templates.v2Issuer], ['1.0', templates.v1Issuer]] as const) {
    const templated = template.includes(TENANT_ID_TEMPLATE);
    if (templated && !tidIsGuid) {
      if (matchesShape(template, iss)) throw new SidecarError('token_tenant_mismatch', "The token's 'tid' claim is not a tenant id");
      continue;
    }
    if (isFilled(template, tid, iss)) {
      checkTenant(template, iss, tid, tidIsGuid);
      return form;
    }
    // Multi-tenant: right shape, but `iss` names another tenant than `tid`.
    if (templated && matchesShape(template, iss)) {
      throw new SidecarError('token_tenant_mismatch', `The token's 'tid' does not match the issuer '${safeName(iss)}'`);
    }
  }
  throw new SidecarError('token_issuer_invalid', `The issuer '${safeName(iss)}' is invalid`);
}

/**
 * EnableAadSigningKeyIssuerValidation: a JWKS key with an `issuer` (after `{tenantid}` substitution)
 * is only valid for that issuer. v2 JWKS keys declare the v2 issuer, so a v1-form token is checked
 * against the v2 issuer of its own tenant: a templated key issuer filled with `tid`, or a concrete
 * one that names `tid` itself (so the same concrete issuer in the key and the metadata, as on
 * consumers, never vouches for a v1 token of another tenant). Keys without an issuer are valid for
 * any issuer.
 */
export function signingKeyIssuerMatches(keyIssuer: string | undefined, iss: string, tid: string, form: IssuerForm, templates: IssuerTemplates): boolean {
  if (keyIssuer === undefined || keyIssuer === '') return true;
  if (isFilled(keyIssuer, tid, iss)) return true;
  if (form !== '1.0') return false;
  if (!keyIssuer.includes(TENANT_ID_TEMPLATE)) return namesTenant(keyIssuer, tid) && isFilled(templates.v2Issuer, tid, keyIssuer);
  // The same template in both: equal for every tenant.
  if (keyIssuer === templates.v2Issuer) return true;
  return templates.v2Issuer.includes(TENANT_ID_TEMPLATE) ? fill(keyIssuer, tid) === fill(templates.v2Issuer, tid) : isFilled(keyIssuer, tid, templates.v2Issuer);
}
