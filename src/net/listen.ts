/**
 * Binding a listener the way Kestrel's ListenAnyIP does: `+`, `*` and ports-only settings mean every
 * interface of both families, a dual-stack `::` socket, so kubelet probes and peers reach it on
 * IPv4-only, dual-stack and IPv6-only clusters alike. On a host whose kernel has no IPv6 the bind
 * falls back to `0.0.0.0`.
 */
import type { Server } from 'node:net';

/** The address `+` and `*` bind: IPv6 any, which Node opens dual-stack (IPv4-mapped peers included). */
export const ANY_HOST = '::';
const IPV4_ANY = '0.0.0.0';

/** True for the errors a host without IPv6 answers an IPv6 bind with. */
export function isNoIpv6(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL') return true;
  // grpc-js folds the socket errors into its message.
  const message = (err as { message?: unknown } | null)?.message;
  return typeof message === 'string' && /\bEAFNOSUPPORT\b|\bEADDRNOTAVAIL\b/.test(message);
}

function listenOnce(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Listens on host:port; `::` falls back to `0.0.0.0` where the host has no IPv6. */
export async function listenTcp(server: Server, address: { readonly host: string; readonly port: number }): Promise<void> {
  try {
    await listenOnce(server, address.port, address.host);
  } catch (err) {
    if (address.host !== ANY_HOST || !isNoIpv6(err)) throw err;
    await listenOnce(server, address.port, IPV4_ANY);
  }
}

/** The same fallback for a bind function that takes a host (grpc-js's bindAsync). */
export async function bindWithFallback<T>(host: string, bind: (host: string) => Promise<T>): Promise<T> {
  try {
    return await bind(host);
  } catch (err) {
    if (host !== ANY_HOST || !isNoIpv6(err)) throw err;
    return bind(IPV4_ANY);
  }
}
