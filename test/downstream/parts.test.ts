/** Unit tests for the pure parts of the downstream call: URL, media types, challenges, response shape. */
import { expect } from 'chai';
import { buildDownstreamUrl } from '../../src/downstream/call.js';
import { escapeDataString } from '../../src/downstream/url.js';
import { isTextualMediaType, parseMediaType } from '../../src/downstream/media-type.js';
import { claimsFromWwwAuthenticate, parseChallenges } from '../../src/downstream/claims-challenge.js';
import { decodeContent, selectResponseHeaders } from '../../src/downstream/response.js';
import { addExtraHeaders, isReservedHeaderName } from '../../src/downstream/request-headers.js';
import { SidecarError } from '../../src/errors.js';
import { apiOptions } from './fixtures.js';

describe('downstream: buildDownstreamUrl', () => {
  it('joins BaseUrl and RelativePath with exactly one slash (Microsoft sample)', () => {
    expect(buildDownstreamUrl(apiOptions('https://graph.microsoft.com/v1.0/', { relativePath: '/me' }))).to.equal('https://graph.microsoft.com/v1.0/me');
    expect(buildDownstreamUrl(apiOptions('https://graph.microsoft.com/v1.0', { relativePath: 'me' }))).to.equal('https://graph.microsoft.com/v1.0/me');
    expect(buildDownstreamUrl(apiOptions('https://h.example//', { relativePath: '//a/b/' }))).to.equal('https://h.example/a/b/');
  });

  it('keeps a trailing slash when RelativePath is empty', () => {
    expect(buildDownstreamUrl(apiOptions('https://h.example/api/'))).to.equal('https://h.example/api/');
  });

  it('appends ExtraQueryParameters with ? or & and escapes names and values like Uri.EscapeDataString', () => {
    expect(buildDownstreamUrl(apiOptions('https://h.example', { relativePath: 'items', extraQueryParameters: { param1: 'value1' } }))).to.equal('https://h.example/items?param1=value1');
    expect(
      buildDownstreamUrl(apiOptions('https://h.example', { relativePath: '/items?$top=5', extraQueryParameters: { 'a b': 'x&y=z', q: "it's (ok)*!" } })),
    ).to.equal("https://h.example/items?$top=5&a%20b=x%26y%3Dz&q=it%27s%20%28ok%29%2A%21");
    expect(escapeDataString('é~-._/')).to.equal('%C3%A9~-._%2F');
  });

  it('puts the query in front of a fragment', () => {
    expect(buildDownstreamUrl(apiOptions('https://h.example', { relativePath: 'p#frag', extraQueryParameters: { k: 'v' } }))).to.equal('https://h.example/p?k=v#frag');
  });

  it('never lets RelativePath choose the host', () => {
    const url = new URL(buildDownstreamUrl(apiOptions('https://api.example/v1/', { relativePath: '//evil.example/steal' })));
    expect(url.host).to.equal('api.example');
    expect(url.pathname).to.equal('/v1/evil.example/steal');
  });

  it('throws misconfigured when BaseUrl is missing or blank', () => {
    for (const baseUrl of [undefined, '', '   ']) {
      try {
        buildDownstreamUrl(apiOptions(baseUrl));
        expect.fail('should have thrown');
      } catch (err) {
        expect(err).to.be.instanceOf(SidecarError);
        expect((err as SidecarError).code).to.equal('misconfigured');
        expect((err as SidecarError).spec.httpStatus).to.equal(500);
      }
    }
  });
});

describe('downstream: media types', () => {
  it('parses type, subtype and parameters, rejecting blank and malformed values', () => {
    const t = parseMediaType(' Application/JSON ; Charset="utf-8"; q=1 ');
    expect(t?.essence).to.equal('application/json');
    expect(t?.parameters.get('charset')).to.equal('utf-8');
    expect(parseMediaType('multipart/form-data; boundary="a;b"')?.parameters.get('boundary')).to.equal('a;b');
    for (const bad of [undefined, '', '  ', 'json', '/json', 'text/', 'text/plain; charset', 'text/plain\r\nX: y', 'te xt/plain']) {
      expect(parseMediaType(bad), String(bad)).to.equal(undefined);
    }
  });

  it('classifies textual media types', () => {
    for (const t of ['text/plain', 'text/html', 'application/json', 'application/problem+json', 'application/atom+xml', 'application/xml', 'application/javascript', 'application/x-www-form-urlencoded', 'application/jwt', 'application/yaml', 'application/x-yaml', 'application/openapi+yaml', 'application/x-ndjson', 'application/octet-stream; charset=utf-8']) {
      expect(isTextualMediaType(parseMediaType(t)!), t).to.equal(true);
    }
    for (const t of ['application/octet-stream', 'image/png', 'application/pdf', 'multipart/form-data; boundary=x']) {
      expect(isTextualMediaType(parseMediaType(t)!), t).to.equal(false);
    }
  });
});

describe('downstream: claims challenges', () => {
  const claims = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}';
  const b64 = Buffer.from(claims).toString('base64');

  it('decodes a base64 claims value from an insufficient_claims Bearer challenge', () => {
    expect(claimsFromWwwAuthenticate(`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="${b64}"`)).to.equal(claims);
  });

  it('accepts raw JSON claims and a challenge that is not the first one', () => {
    expect(claimsFromWwwAuthenticate(['Basic realm="x"', `Bearer error="insufficient_claims", claims="${claims.replace(/"/g, '\\"')}"`])).to.equal(claims);
    expect(claimsFromWwwAuthenticate(`Negotiate abc==, Bearer claims="${b64}", error="insufficient_claims"`)).to.equal(claims);
  });

  it('ignores challenges without insufficient_claims, without claims, or with claims that are not JSON', () => {
    expect(claimsFromWwwAuthenticate(undefined)).to.equal(undefined);
    expect(claimsFromWwwAuthenticate('Bearer error="invalid_token"')).to.equal(undefined);
    expect(claimsFromWwwAuthenticate(`Bearer error="invalid_token", claims="${b64}"`)).to.equal(undefined);
    expect(claimsFromWwwAuthenticate('Bearer error="insufficient_claims"')).to.equal(undefined);
    expect(claimsFromWwwAuthenticate('Bearer error="insufficient_claims", claims="bm90IGpzb24="')).to.equal(undefined);
    expect(claimsFromWwwAuthenticate(`Basic error="insufficient_claims", claims="${b64}"`)).to.equal(undefined);
  });

  it('parses schemes, parameters and token68 values', () => {
    const parsed = parseChallenges('Negotiate a1b2==, Bearer realm="r\\"q", error=invalid_token');
    expect(parsed.map((c) => c.scheme)).to.deep.equal(['negotiate', 'bearer']);
    expect(parsed[0].params.size).to.equal(0);
    expect(parsed[1].params.get('realm')).to.equal('r"q');
    expect(parsed[1].params.get('error')).to.equal('invalid_token');
  });
});

describe('downstream: response shape', () => {
  const raw = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': '57',
    'content-md5': 'abc',
    allow: 'GET, POST',
    etag: '"v1"',
    location: '/elsewhere',
    'set-cookie': ['a=1', 'b=2'],
    connection: 'keep-alive, x-hop',
    'keep-alive': 'timeout=5',
    'transfer-encoding': 'chunked',
    'x-hop': '1',
    'proxy-authenticate': 'Basic',
    'x-ms-request-id': 'rid',
    'www-authenticate': 'Bearer',
  };

  it('returns only content headers by default, in .NET casing, as arrays', () => {
    expect(selectResponseHeaders(raw, false)).to.deep.equal({
      'Content-Type': ['application/json; charset=utf-8'],
      'Content-Length': ['57'],
      'Content-MD5': ['abc'],
      Allow: ['GET', 'POST'],
    });
  });

  it('returns every end-to-end header except Set-Cookie when returnAllResponseHeaders is on', () => {
    const all = selectResponseHeaders(raw, true);
    expect(Object.keys(all).sort()).to.deep.equal(['Allow', 'Content-Length', 'Content-MD5', 'Content-Type', 'ETag', 'Location', 'WWW-Authenticate', 'x-ms-request-id'].sort());
  });

  it('decodes text by charset, keeps binary as base64 and empty as null', () => {
    expect(decodeContent(Buffer.alloc(0), 'application/json', undefined)).to.deep.equal({ content: null });
    expect(decodeContent(Buffer.from('{"a":"é"}'), 'application/json', undefined)).to.deep.equal({ content: '{"a":"é"}' });
    expect(decodeContent(Buffer.from([0x63, 0x61, 0x66, 0xe9]), 'text/plain; charset=iso-8859-1', undefined)).to.deep.equal({ content: 'café' });
    expect(decodeContent(Buffer.from('plain'), undefined, undefined)).to.deep.equal({ content: 'plain' });
    expect(decodeContent(Buffer.from([0xff, 0x00, 0xfe]), undefined, undefined)).to.deep.equal({ content: '/wD+', contentEncoding: 'base64' });
    expect(decodeContent(Buffer.from([0x89, 0x50, 0x4e, 0x47]), 'image/png', undefined)).to.deep.equal({ content: 'iVBORw==', contentEncoding: 'base64' });
    // Any type is text when its bytes are valid UTF-8; a declared charset is decoded strictly outside the textual types.
    expect(decodeContent(Buffer.from('a: é'), 'application/x-toml', undefined)).to.deep.equal({ content: 'a: é' });
    expect(decodeContent(Buffer.from('x'), 'not a media type', undefined)).to.deep.equal({ content: 'x' });
    expect(decodeContent(Buffer.from([0x63, 0xe9]), 'application/x-thing; charset=utf-8', undefined)).to.deep.equal({ content: 'Y+k=', contentEncoding: 'base64' });
    expect(decodeContent(Buffer.from([0x63, 0xe9]), 'text/plain', undefined)).to.deep.equal({ content: 'c\ufffd' });
    expect(decodeContent(Buffer.from('{}'), 'application/json', 'gzip')).to.deep.equal({ content: 'e30=', contentEncoding: 'base64' });
    expect(decodeContent(Buffer.from('x'), 'text/plain; charset=no-such-charset', undefined)).to.deep.equal({ content: 'eA==', contentEncoding: 'base64' });
  });
});

describe('downstream: ExtraHeaderParameters filtering', () => {
  it('treats identity, proxy, forwarding and framing headers as reserved, case-insensitively', () => {
    for (const name of ['Authorization', 'authorization', 'COOKIE', 'Host', 'X-Original-URL', 'X-MS-CLIENT-PRINCIPAL', 'x-ms-client-principal-id', 'X-MS-CLIENT-PRINCIPAL-NAME', 'X-MS-CLIENT-PRINCIPAL-IDP', 'X-Forwarded-For', 'x-forwarded-host', 'X-MS-TOKEN-AAD-ID-TOKEN', 'Proxy-Authorization', 'Proxy-Connection', 'Sec-Fetch-Mode', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Upgrade', 'TE', 'Keep-Alive']) {
      expect(isReservedHeaderName(name), name).to.equal(true);
    }
    for (const name of ['X-Custom-Header', 'OData-Version', 'ConsistencyLevel', 'Prefer']) {
      expect(isReservedHeaderName(name), name).to.equal(false);
    }
  });

  it('skips reserved, invalid and already-present headers and reports them by name', () => {
    const headers: Record<string, string> = { Accept: 'application/json' };
    const skipped = addExtraHeaders(headers, { accept: 'text/plain', Authorization: 'Bearer evil', 'X-Ok': 'yes', 'X-Crlf': 'a\r\nInjected: 1', 'X-Nul': 'a\0b', 'Bad Name': 'v' });
    expect(headers).to.deep.equal({ Accept: 'application/json', 'X-Ok': 'yes' });
    expect(skipped.map((s) => `${s.name}:${s.reason}`)).to.deep.equal(['accept:duplicate', 'Authorization:reserved', 'X-Crlf:invalid_value', 'X-Nul:invalid_value', '"Bad Name":invalid_name']);
  });
});
