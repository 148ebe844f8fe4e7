/**
 * The identity API's request-line helpers (src/http/server.ts): the path split that picks a route
 * and the Authorization header read from rawHeaders. Both replaced allocations on the hot path, so
 * each is checked against the plain code it stands for.
 */
import { expect } from 'chai';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { authorizationHeader, routedPath } from '../../src/http/server.js';

describe('identity API routing helpers', function () {
  it('routedPath splits like path.split("/").filter(Boolean), lower-casing only the first segment', function () {
    const paths = ['/', '', '/Validate', '/Validate/', '//Validate', '/AuthorizationHeader/My%20Api', '/AuthorizationHeader//x', '/a/b/c', '/HEALTHZ/..', '///', '/DownstreamApi/Graph/'];
    for (const p of paths) {
      const segments = p.split('/').filter((s) => s !== '');
      expect(routedPath(p), p).to.deep.equal({ first: (segments[0] ?? '').toLowerCase(), second: segments[1] ?? '', count: segments.length });
    }
  });

  it('authorizationHeader gives the Authorization line, any name case, and several joined with "," (as ASP.NET does; node:http keeps only the first)', function () {
    const cases: string[][] = [
      [],
      ['Host', 'x'],
      ['Authorization', 'Bearer a'],
      ['host', 'x', 'AUTHORIZATION', 'Bearer b', 'authorization', 'Bearer c'],
      ['x-authorization', 'no', 'authorizatioN', ''],
    ];
    const expected = [undefined, undefined, 'Bearer a', 'Bearer b,Bearer c', ''];
    cases.forEach((raw, i) => {
      const req = new IncomingMessage(new Socket());
      req.rawHeaders = raw;
      expect(authorizationHeader(req), JSON.stringify(raw)).to.equal(expected[i]);
    });
  });
});
