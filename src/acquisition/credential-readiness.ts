/**
 * Whether the configured client credentials (`AzureAd:ClientCredentials`) can be used, for
 * readiness. Acquisition loads a certificate on first use and skips one that cannot be loaded for
 * the next in the list, as Microsoft.Identity.Web does; alone, that lets a sidecar whose every
 * certificate is missing, corrupt or locked by a wrong password start cleanly, report ready, and
 * then answer every acquisition 500 `misconfigured`. Ready means "credentials usable" (reference
 * envoy-ext-authz §3, "Probes"): so the certificates are loaded at start, in the background and
 * through the very `load()` acquisition calls (what loads is then reused, not read twice), and
 * readiness waits until at least one configured credential is usable.
 *
 * A failed load is retried with backoff while no credential is usable: a Key Vault or IMDS that is
 * not answering yet, a role assignment still propagating, a certificate volume synced late. The
 * first failure of each credential is logged as a warning; later ones only at debug.
 */
import type { Logger } from '../log.js';
import { SidecarError } from '../errors.js';
import type { ClientCredentialSource } from './credentials.js';
import { BACKGROUND_RETRY } from '../validation/signing-keys.js';

export interface ClientCredentialReadiness {
  /** Starts loading the certificates in the background (once; later calls do nothing). */
  start(): void;
  /**
   * True when no client credential is configured, or when at least one has been usable since
   * start. Cheap and never calls out: readiness asks on every probe.
   */
  usable(): boolean;
  /** Stops the background retries. */
  close(): void;
}

export interface ClientCredentialReadinessOptions {
  readonly logger: Logger;
  /** Retry of failed loads while none is usable: first delay and ceiling in ms (default 1 s … 60 s, as the signing keys). */
  readonly retry?: { readonly initialMs: number; readonly maxMs: number };
}

/** The readiness of `sources` (the credentials acquisition uses, in configured order). */
export function createClientCredentialReadiness(sources: readonly ClientCredentialSource[], opts: ClientCredentialReadinessOptions): ClientCredentialReadiness {
  const { logger } = opts;
  const retryMaxMs = opts.retry?.maxMs ?? BACKGROUND_RETRY.maxMs;
  let retryDelayMs = opts.retry?.initialMs ?? BACKGROUND_RETRY.initialMs;
  /** Latched: once a credential was usable, a later failure is acquisition's to handle (and to fall back from). */
  let ready = false;
  let started = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  /** Credentials whose failure has been logged as a warning already. */
  const warned = new Set<ClientCredentialSource>();

  function usable(): boolean {
    if (!ready) ready = sources.length === 0 || sources.some((s) => s.usable());
    return ready;
  }

  /** Loads one certificate; a failure is logged (a warning the first time) and swallowed. */
  async function load(source: ClientCredentialSource): Promise<void> {
    try {
      await source.load();
      if (warned.has(source)) logger.info({ event: 'client_credential_loaded', credential: source.label }, 'client credential loaded after an earlier failure');
    } catch (err) {
      // The detail names the file, vault or certificate and why; never a password or key material.
      const e = err instanceof SidecarError ? err : undefined;
      const fields = { event: 'client_credential_unusable', credential: source.label, code: e?.code ?? 'internal', detail: e?.detail ?? (err instanceof Error ? err.name : 'error') };
      if (warned.has(source)) {
        logger.debug(fields, 'client credential still cannot be loaded');
      } else {
        warned.add(source);
        logger.warn(fields, 'client credential could not be loaded; acquisition skips it for the next one, and readiness waits until one is usable');
      }
    }
  }

  /**
   * One round, in configured order as acquisition takes them: the first usable credential ends it,
   * and those behind it stay lazy (a Key Vault fallback behind a working secret costs no IMDS or
   * Key Vault call until acquisition needs it). A retry later if none is usable.
   */
  async function round(): Promise<void> {
    timer = undefined;
    for (const source of sources) {
      if (closed) return;
      if (!source.usable()) await load(source);
      if (source.usable()) break;
    }
    if (closed || usable()) return;
    timer = setTimeout(() => void round(), retryDelayMs);
    timer.unref();
    retryDelayMs = Math.min(retryDelayMs * 2, retryMaxMs);
  }

  return {
    start() {
      if (started || closed) return;
      started = true;
      void round();
    },
    usable,
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}
