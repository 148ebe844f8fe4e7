/**
 * Microsoft's LocalCallerRestriction (reference sidecar-http-api §1.3 step 1): outside Development only
 * loopback peers may call the identity API.
 */

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; a missing peer (unix socket) counts as local. */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return true;
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.');
}
