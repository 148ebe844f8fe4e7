/**
 * The proxy variables as src/net/proxy.ts reads them: which variable wins, which proxy a scheme
 * gets, and which destinations no_proxy sends direct. The end-to-end behaviour (tunnels, absolute
 * form, credentials, refusals) is in test/e2e/egress-proxy.test.ts.
 */
import { expect } from 'chai';
import { bypassesProxy, describeProxy, parseNoProxy, proxyFromEnvironment } from '../../src/net/proxy.js';

describe('egress proxy variables (src/net/proxy.ts)', () => {
  it('reads nothing, not even no_proxy, when no proxy variable is set', () => {
    expect(proxyFromEnvironment({ NO_PROXY: 'example.com', HTTPS_PROXY: '  ' })).to.deep.equal({ errors: [] });
  });

  it('takes the lower-case variable over the upper-case one, as curl, Go and .NET do', () => {
    const r = proxyFromEnvironment({ https_proxy: 'http://lower:3128', HTTPS_PROXY: 'http://upper:3128', no_proxy: 'a', NO_PROXY: 'b' });
    expect(r.proxy).to.deep.equal({ https: 'http://lower:3128/', noProxy: ['a'] });
  });

  it('gives each scheme its own variable, all_proxy as the fallback for both, and no fallback from one scheme to the other', () => {
    expect(proxyFromEnvironment({ HTTP_PROXY: 'http://p:1' }).proxy).to.deep.equal({ http: 'http://p:1/', noProxy: [] });
    expect(proxyFromEnvironment({ HTTPS_PROXY: 'http://p:1' }).proxy).to.deep.equal({ https: 'http://p:1/', noProxy: [] });
    expect(proxyFromEnvironment({ ALL_PROXY: 'http://all:1', HTTP_PROXY: 'http://h:1' }).proxy).to.deep.equal({ http: 'http://h:1/', https: 'http://all:1/', noProxy: [] });
  });

  it('reads a value without a scheme as http://, and an https:// proxy as it is', () => {
    expect(proxyFromEnvironment({ HTTPS_PROXY: 'proxy.corp:8080' }).proxy?.https).to.equal('http://proxy.corp:8080/');
    expect(proxyFromEnvironment({ HTTPS_PROXY: 'https://proxy.corp' }).proxy?.https).to.equal('https://proxy.corp/');
  });

  it('refuses unusable values, naming the variable and never repeating the value', () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ HTTPS_PROXY: 'socks5://u:pw@h:1' }, /^HTTPS_PROXY must be an http:\/\/ or https:\/\/ proxy URL \(socks5 proxies/],
      [{ https_proxy: 'http://u:pw@h:1/x?y' }, /^https_proxy must be a proxy origin/],
      [{ ALL_PROXY: 'http://u:pw@[oops' }, /^ALL_PROXY is not a URL/],
    ];
    for (const [env, message] of cases) {
      const r = proxyFromEnvironment(env);
      expect(r.proxy, JSON.stringify(env)).to.equal(undefined);
      expect(r.errors).to.have.length(1);
      expect(r.errors[0]).to.match(message);
      expect(r.errors[0]).not.to.include('pw');
    }
  });

  it('describes a proxy for the logs without its credentials', () => {
    expect(describeProxy('http://user:s3cret@proxy.corp:3128/')).to.equal('http://proxy.corp:3128 (with credentials)');
    expect(describeProxy('https://proxy.corp/')).to.equal('https://proxy.corp');
  });

  describe('no_proxy', () => {
    const bypass = (entries: string, host: string, port = 443): boolean => bypassesProxy(parseNoProxy(entries.split(',')), host, port);

    it('covers a name and its subdomains, with or without a leading dot or *.', () => {
      for (const entry of ['example.com', '.example.com', '*.example.com']) {
        expect(bypass(entry, 'example.com'), entry).to.equal(true);
        expect(bypass(entry, 'api.example.com'), entry).to.equal(true);
        expect(bypass(entry, 'notexample.com'), entry).to.equal(false);
        expect(bypass(entry, 'example.com.evil.net'), entry).to.equal(false);
      }
      expect(bypass('svc.cluster.local', 'api.ns.svc.cluster.local.')).to.equal(true);
    });

    it('honours a port on an entry', () => {
      expect(bypass('example.com:8443', 'example.com', 8443)).to.equal(true);
      expect(bypass('example.com:8443', 'example.com', 443)).to.equal(false);
      expect(bypass('10.0.0.1:80', '10.0.0.1', 80)).to.equal(true);
      expect(bypass('10.0.0.1:80', '10.0.0.1', 443)).to.equal(false);
    });

    it('matches IP literals and CIDR ranges, IPv4 and IPv6, and never an IP by name suffix', () => {
      expect(bypass('10.0.0.0/8', '10.1.2.3')).to.equal(true);
      expect(bypass('10.0.0.0/8', '11.1.2.3')).to.equal(false);
      expect(bypass('169.254.169.254', '169.254.169.254', 80)).to.equal(true);
      expect(bypass('::1', '[::1]')).to.equal(true);
      expect(bypass('fd00::/8', '[fd12::1]')).to.equal(true);
      expect(bypass('[::1]:8443', '[::1]', 8443)).to.equal(true);
      expect(bypass('fd00::/8', '[fe80::1]')).to.equal(false);
      expect(bypass('0.0.1', '10.0.0.1')).to.equal(false);
    });

    it('bypasses everything with *, and nothing with an empty list', () => {
      expect(bypass('*', 'login.microsoftonline.com')).to.equal(true);
      expect(bypass('', 'login.microsoftonline.com')).to.equal(false);
    });
  });
});
