/**
 * Microsoft's LocalCallerRestriction (reference sidecar-http-api §1.3 step 1): outside Development only
 * loopback peers may call the identity API.
 */

/**
 * True for 127.0.0.0/8, ::1 and IPv4-mapped loopback. A missing peer address counts as NOT local:
 * Microsoft's sidecar counts it as local because ASP.NET also listens on Unix sockets and named
 * pipes, but this server listens on TCP only, where Node reports no address when the peer reset the
 * connection before it was asked. A remote client could send a request and reset at once to pass.
 */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.');
}
