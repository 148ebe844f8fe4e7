/**
 * A bound on the log lines one kind of client-caused failure can write. A flood of invalid tokens or
 * refused callers would otherwise write one line each: disk, CPU and log-pipeline cost an attacker
 * controls. Each key gets at most `perSecond` lines per second; the next line written for it says how
 * many were held back (`suppressed`). The counters in /metrics still count every one. At debug level
 * nothing is held back: that is the level for looking at every request.
 */
export interface LogLimiter {
  /** Whether a line for `key` may be written now. */
  allow(key: string): boolean;
  /** `{ suppressed: n }` when lines for `key` were held back since its last line (and resets it), else `{}`. */
  suppressed(key: string): { suppressed?: number };
}

interface Window {
  start: number;
  written: number;
  held: number;
}

/** Lines per second per kind of failure, for the HTTP API and ext_authz each. */
export const LOG_LINES_PER_SECOND = 10;

/** At most this many distinct keys (the error codes are a closed set of about thirty). */
const MAX_KEYS = 64;

export function createLogLimiter(perSecond: number, unlimited: boolean, now: () => number = () => performance.now()): LogLimiter {
  const windows = new Map<string, Window>();
  return {
    allow(key) {
      if (unlimited) return true;
      const t = now();
      let w = windows.get(key);
      if (w === undefined) {
        if (windows.size >= MAX_KEYS) return false;
        w = { start: t, written: 0, held: 0 };
        windows.set(key, w);
      } else if (t - w.start >= 1000) {
        w.start = t;
        w.written = 0;
      }
      if (w.written < perSecond) {
        w.written++;
        return true;
      }
      w.held++;
      return false;
    },
    suppressed(key) {
      const w = windows.get(key);
      if (w === undefined || w.held === 0) return {};
      const held = w.held;
      w.held = 0;
      return { suppressed: held };
    },
  };
}
