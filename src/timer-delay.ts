/**
 * The longest delay a Node timer honours. setTimeout (and everything built on it: AbortSignal.timeout,
 * socket timeouts, undici's timers) stores its delay as a signed 32-bit integer: a longer one is
 * replaced by 1 ms with a TimeoutOverflowWarning, so a "30 days" refresh fires at once, and again,
 * and again. The configuration bounds every delay below this (src/config/defaults.ts, `max`);
 * timerDelay() is the guard where a delay is computed.
 */

/** 2^31-1 ms, about 24.8 days: setTimeout's largest delay. */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** `ms` as a delay setTimeout keeps: clamped into 0…MAX_TIMER_DELAY_MS (NaN becomes 0). */
export function timerDelay(ms: number): number {
  if (!(ms > 0)) return 0;
  return ms > MAX_TIMER_DELAY_MS ? MAX_TIMER_DELAY_MS : ms;
}
