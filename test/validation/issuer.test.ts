import { expect } from 'chai';
import fc from 'fast-check';
import { isFilled, namesTenant, TENANT_ID_TEMPLATE } from '../../src/validation/issuer.js';

/** The plain definition isFilled must agree with. */
const filled = (template: string, tid: string): string => template.split(TENANT_ID_TEMPLATE).join(tid);

describe('issuer templates', function () {
  const v2 = 'https://login.microsoftonline.com/{tenantid}/v2.0';
  const tid = '72f988bf-86f1-41af-91ab-2d7cd011db47';

  it('matches an issuer against a {tenantid} template without building it', function () {
    expect(isFilled(v2, tid, `https://login.microsoftonline.com/${tid}/v2.0`)).to.equal(true);
    for (const other of [
      `https://login.microsoftonline.com/${tid}/v2.0/`,
      `https://login.microsoftonline.com/${tid}/v2.1`,
      `xttps://login.microsoftonline.com/${tid}/v2.0`,
      `https://login.microsoftonline.com/${tid.slice(0, -1)}8/v2.0`,
      `https://login.microsoftonline.com/${tid}`,
      `https://login.microsoftonline.com/${tid.toUpperCase()}/v2.0`,
      `https://login.microsoftonline.co/${tid}x/v2.0`,
      `https://sts.windows.net/${tid}/`,
      '',
    ]) {
      expect(isFilled(v2, tid, other), other).to.equal(false);
    }
    expect(isFilled('https://sts.windows.net/fixed/', tid, 'https://sts.windows.net/fixed/')).to.equal(true);
    expect(isFilled('https://x/{tenantid}/{tenantid}', 'a', 'https://x/a/a')).to.equal(true);
  });

  it('agrees with filling the template and comparing, for any template, tenant and value', function () {
    const piece = fc.string({ maxLength: 12 });
    const template = fc.tuple(fc.array(piece, { minLength: 1, maxLength: 3 }), fc.boolean()).map(([parts, brace]) => parts.join(brace ? TENANT_ID_TEMPLATE : '{tenant}'));
    fc.assert(
      fc.property(template, piece, piece, fc.nat(60), fc.constantFrom('exact', 'one character', 'splice'), (t, id, noise, cut, kind) => {
        const target = filled(t, id);
        let value = target;
        if (kind === 'one character' && target.length > 0) {
          // The same length with one character changed: only a comparison of every position catches it.
          const at = cut % target.length;
          value = target.slice(0, at) + String.fromCharCode(target.charCodeAt(at) ^ 1) + target.slice(at + 1);
        } else if (kind === 'splice') {
          value = target.slice(0, cut) + noise + target.slice(cut + 1);
        }
        expect(isFilled(t, id, value)).to.equal(target === value);
      }),
      { numRuns: 2000 },
    );
  });

  it('finds the tenant only in the first path segment of an issuer, whole', function () {
    expect(namesTenant(`https://login.microsoftonline.com/${tid}/v2.0`, tid)).to.equal(true);
    expect(namesTenant(`https://sts.windows.net/${tid}/`, tid)).to.equal(true);
    expect(namesTenant(`https://sts.windows.net/${tid}`, tid)).to.equal(true);
    expect(namesTenant(`https://login.microsoftonline.com/${tid}/v2.0`, 'v2.0')).to.equal(false);
    expect(namesTenant(`https://login.microsoftonline.com/${tid}/v2.0`, 'login.microsoftonline.com')).to.equal(false);
    expect(namesTenant(`https://login.microsoftonline.com/${tid}x/v2.0`, tid)).to.equal(false);
    expect(namesTenant(`https://login.microsoftonline.com/${tid}/v2.0`, tid.slice(0, 8))).to.equal(false);
    expect(namesTenant(`https://x/a/${tid}/v2.0`, tid)).to.equal(false);
    expect(namesTenant('https://login.microsoftonline.com', tid)).to.equal(false);
    expect(namesTenant(`https://login.microsoftonline.com/${tid}/v2.0`, '')).to.equal(false);
  });
});
