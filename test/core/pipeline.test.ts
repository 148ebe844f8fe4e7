import { expect } from 'chai';
import { parseAuthorization, plainBearerToken, MAX_TOKEN_LENGTH } from '../../src/pipeline/credential.js';
import { requireScopesOrRoles, tokenRoles, tokenScopes } from '../../src/pipeline/authorize.js';
import { SidecarError } from '../../src/errors.js';
import { isLoopback } from '../../src/http/loopback.js';
import { thrown } from '../helpers/assert.js';

describe('pipeline steps', () => {
  describe('credential extraction', () => {
    it('plainBearerToken takes only the plain Bearer form, and then gives the token parseAuthorization gives', () => {
      const headers = ['Bearer abc.def.ghi', 'bearer abc.def.ghi', 'BeArEr x', 'Bearer  abc', 'Bearer abc ', 'Bearer\tabc', 'PoP abc', 'Bearer', 'Bearer ', 'Bearerx abc', 'Token abc', '', `Bearer ${'a'.repeat(MAX_TOKEN_LENGTH + 1)}`];
      const plain = headers.map((h) => plainBearerToken(h));
      expect(plain.filter((t) => t !== undefined)).to.deep.equal(['abc.def.ghi', 'abc.def.ghi', 'x']);
      for (const [i, h] of headers.entries()) {
        if (plain[i] !== undefined) expect(parseAuthorization(h)).to.deep.equal({ kind: 'bearer', token: plain[i] });
      }
      expect(plainBearerToken(undefined)).to.equal(undefined);
    });

    it('accepts the Bearer scheme case-insensitively', () => {
      expect(parseAuthorization('bearer abc.def.ghi')).to.deep.equal({ kind: 'bearer', token: 'abc.def.ghi' });
      expect(parseAuthorization('BEARER abc.def.ghi')).to.deep.equal({ kind: 'bearer', token: 'abc.def.ghi' });
      expect(parseAuthorization('PoP abc.def.ghi')).to.deep.equal({ kind: 'pop', token: 'abc.def.ghi' });
    });
    it('treats other schemes and empty values as no credential', () => {
      for (const h of [undefined, '', 'Basic dXNlcjpwYXNz', 'Bearer', 'Bearer    ']) expect(parseAuthorization(h).kind, String(h)).to.equal('none');
    });
    it('rejects bearer values that cannot be a compact token', () => {
      expect(() => parseAuthorization('Bearer a b')).to.throw(SidecarError).with.property('code', 'credential_malformed');
      expect(() => parseAuthorization('Bearer ' + 'a'.repeat(MAX_TOKEN_LENGTH + 1))).to.throw(SidecarError);
    });
  });

  describe('scope and role checks', () => {
    const claims = { scp: 'User.Read access_as_user', roles: ['Data.Read'] };
    it('reads scopes and roles', () => {
      expect(tokenScopes(claims)).to.deep.equal(['User.Read', 'access_as_user']);
      expect(tokenRoles(claims)).to.deep.equal(['Data.Read']);
    });
    it('passes with any one required scope or role by default', () => {
      requireScopesOrRoles(claims, ['nope', 'access_as_user'], [], false);
      requireScopesOrRoles(claims, [], ['Data.Read'], false);
    });
    it('requires every one with all', () => {
      expect(() => requireScopesOrRoles(claims, ['access_as_user', 'nope'], [], true)).to.throw(SidecarError).with.property('code', 'insufficient_scope');
    });
    it('names the required scopes in the challenge and the roles in the detail only', () => {
      const both = thrown(() => requireScopesOrRoles(claims, ['Files.Read'], ['Admin'], false));
      expect(both.code).to.equal('insufficient_scope');
      expect(both.scope).to.equal('Files.Read');
      expect(both.detail).to.contain('Files.Read Admin');
      const rolesOnly = thrown(() => requireScopesOrRoles(claims, [], ['Admin'], false));
      expect(rolesOnly.code).to.equal('insufficient_scope');
      expect(rolesOnly.scope).to.equal(undefined);
      expect(rolesOnly.detail).to.contain('Admin');
    });
  });

  describe('loopback detection', () => {
    it('recognises IPv4, IPv6 and IPv4-mapped loopback and a missing peer', () => {
      for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) expect(isLoopback(a), a).to.equal(true);
      // No address: a TCP peer that reset before Node asked (the listeners are TCP only): not local.
      for (const a of ['203.0.113.10', '::ffff:10.0.0.1', '10.0.0.1', 'fe80::1', undefined]) expect(isLoopback(a), String(a)).to.equal(false);
    });
  });
});
