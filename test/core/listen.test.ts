/**
 * The IPv4 fallback of `+`/`*` listeners (net/listen.ts). A kernel without IPv6 cannot be had on a
 * test machine, so the fallback is driven with servers whose bind answers as such a kernel does; the
 * dual-stack bind itself is covered end to end in test/e2e/dual-stack.test.ts.
 */
import { expect } from 'chai';
import { EventEmitter } from 'node:events';
import type { Server } from 'node:net';
import { bindWithFallback, listenTcp } from '../../src/net/listen.js';

/** A server whose listen() fails with `code` for the hosts in `failing` and succeeds otherwise. */
function fakeServer(failing: Record<string, string>): { server: Server; tried: string[] } {
  const tried: string[] = [];
  const emitter = new EventEmitter() as EventEmitter & { listen: (port: number, host: string, cb: () => void) => void };
  emitter.listen = (_port, host, cb) => {
    tried.push(host);
    const code = failing[host];
    if (code === undefined) setImmediate(cb);
    else setImmediate(() => emitter.emit('error', Object.assign(new Error(`listen ${code} ${host}`), { code })));
  };
  return { server: emitter as unknown as Server, tried };
}

describe('listeners on every interface without IPv6 (net/listen)', function () {
  it('falls back from :: to 0.0.0.0 when the host has no IPv6', async function () {
    for (const code of ['EAFNOSUPPORT', 'EADDRNOTAVAIL']) {
      const { server, tried } = fakeServer({ '::': code });
      await listenTcp(server, { host: '::', port: 0 });
      expect(tried).to.deep.equal(['::', '0.0.0.0']);
    }
  });

  it('does not fall back for other errors or other hosts', async function () {
    const inUse = fakeServer({ '::': 'EADDRINUSE' });
    const e1 = await listenTcp(inUse.server, { host: '::', port: 9090 }).then(() => undefined, (e: unknown) => e as NodeJS.ErrnoException);
    expect(e1?.code).to.equal('EADDRINUSE');
    expect(inUse.tried).to.deep.equal(['::']);
    const v6only = fakeServer({ '::1': 'EAFNOSUPPORT' });
    const e2 = await listenTcp(v6only.server, { host: '::1', port: 0 }).then(() => undefined, (e: unknown) => e as NodeJS.ErrnoException);
    expect(e2?.code).to.equal('EAFNOSUPPORT');
    expect(v6only.tried).to.deep.equal(['::1']);
  });

  it('applies the same rule to a grpc-js bind, whose error names the socket error in its message', async function () {
    const tried: string[] = [];
    const port = await bindWithFallback('::', async (host) => {
      tried.push(host);
      if (host === '::') throw new Error('No address added out of total 1 resolved: listen EAFNOSUPPORT: address family not supported [::]:9191');
      return 9191;
    });
    expect(port).to.equal(9191);
    expect(tried).to.deep.equal(['::', '0.0.0.0']);
    const refused = await bindWithFallback('::', async () => {
      throw new Error('No address added out of total 1 resolved: listen EADDRINUSE: address already in use [::]:9191');
    }).then(() => undefined, (e: unknown) => e as Error);
    expect(refused?.message).to.contain('EADDRINUSE');
  });
});
