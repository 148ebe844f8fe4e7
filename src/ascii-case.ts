/**
 * Case folding of ASCII letters only, for cache keys built from what a caller sends (scopes, agent
 * user names). JavaScript's own mapping is Unicode's: `ſ`.toUpperCase() is `S`, the Kelvin sign
 * lower-cases to `k`, `ı` upper-cases to `I`. Entra tells those names apart (its UPNs and scope
 * values are ASCII), so a key folded that way would serve the token Entra issued for one name to a
 * look-alike Entra would refuse.
 */
const NON_ASCII = /[^\x00-\x7f]/;
const ASCII_UPPER = /[A-Z]+/g;
const ASCII_LOWER = /[a-z]+/g;

/** `text` with A–Z lower-cased and every other character as it is. */
export function asciiLowerCase(text: string): string {
  return NON_ASCII.test(text) ? text.replace(ASCII_UPPER, (run) => run.toLowerCase()) : text.toLowerCase();
}

/** `text` with a–z upper-cased and every other character as it is. */
export function asciiUpperCase(text: string): string {
  return NON_ASCII.test(text) ? text.replace(ASCII_LOWER, (run) => run.toUpperCase()) : text.toUpperCase();
}
