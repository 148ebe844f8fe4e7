/**
 * The sidecar process (main.ts loads this module, then calls `main()`) and the only place that wires
 * modules together: load config (exit non-zero before listening when it is invalid), build the
 * outbound agent, validator and acquirer, start the listeners, log one JSON line with every bound
 * address, and shut down gracefully on SIGTERM/SIGINT.
 */
import { loadConfig, processConfigInputs } from './config/load.js';
import type { SidecarConfig } from './config/types.js';
import { formatHostPort } from './config/listeners.js';
import { createLogger, redactTokens, safeCause, unconditionalLogger, type Logger } from './log.js';
import { PROCESS_FAILURES, type ProcessFailureCode } from './errors.js';
import { createOutboundAgent, observeOutbound, type OutboundObserver } from './net/outbound.js';
import { describeProxy } from './net/proxy.js';
import { createTokenValidator } from './validation/validator.js';
import { loadDecryptionKeys } from './validation/decryption.js';
import { loadCertificateFromKeyVault } from './credentials/key-vault.js';
import { createTokenAcquirer } from './acquisition/acquirer.js';
import { resolveApiOptions } from './pipeline/api-options.js';
import { startHttpApi, type HttpApiServer } from './http/server.js';
import { BodyBudget } from './http/body-budget.js';
import type { ExtAuthzServer } from './extauthz/server.js';
import { createMetrics, type Metrics } from './metrics.js';
import { countAcquisitions } from './acquisition/counted.js';
import { startManagementServer, type Readiness } from './management/server.js';
import { VERSION } from './version.js';
import { ReplayCache } from './pop/inbound.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from './log-limit.js';

/**
 * `true` in the one-file bundle (src/build-bundle.ts defines it); undefined in the compiled modules,
 * which main.js runs when the bundle is missing or older than they are.
 */
declare const __SIDECAR_BUNDLE__: boolean | undefined;
/** Whether this code runs from the bundle: the listening line says so (a start from the separate files is ~130 ms slower). */
const RUNS_FROM_BUNDLE = typeof __SIDECAR_BUNDLE__ !== 'undefined' && __SIDECAR_BUNDLE__ === true;

/** How long in-flight requests may drain after SIGTERM. */
export const SHUTDOWN_GRACE_MS = 10_000;
/**
 * When a shutdown that has not finished exits anyway (1): the longest the process lives after SIGTERM.
 * A last resort: at the end of the grace what is left is cut and its outbound calls aborted, so a
 * shutdown ends a few milliseconds after it (the management listener may take up to 1 s more).
 */
export const SHUTDOWN_FORCE_EXIT_MS = SHUTDOWN_GRACE_MS + 2_000;

/** What a finished shutdown reports in its `stopped` line. */
export interface ShutdownReport {
  /** HTTP requests and ext_authz Checks still unanswered when the grace ended, and cut. */
  readonly cutRequests: number;
}

/** Builds and starts everything for a loaded config; resolves with the function that shuts it down. */
export async function run(config: SidecarConfig, logger: Logger): Promise<() => Promise<ShutdownReport>> {
  const outbound = config.sidecar.outbound;
  const metrics = createMetrics({ version: VERSION, collectProcess: true, gcDuration: config.sidecar.management.gcMetrics });
  const baseAgent = createOutboundAgent({ extraCaFiles: outbound.extraCaFiles, ...(outbound.proxy ? { proxy: outbound.proxy } : {}), connectTimeoutMs: outbound.connectTimeoutMs, timeoutMs: outbound.timeoutMs });
  if (outbound.proxy) {
    const { http, https, noProxy } = outbound.proxy;
    logger.info({ event: 'outbound_proxy', https: https ? describeProxy(https) : 'none', http: http ? describeProxy(http) : 'none', noProxy: noProxy.slice(0, 32) }, 'outbound calls go through a proxy, except to no_proxy destinations');
  }
  const observe: OutboundObserver = (target, status, seconds) => metrics.observeOutbound(target, status, seconds);
  const agent = observeOutbound(baseAgent, observe);
  // Downstream API calls are labelled by their dispatcher, not guessed from their paths.
  const downstreamAgent = observeOutbound(baseAgent, observe, 'downstream');
  // The acquirer is made after the validator has started fetching keys (its ~6 ms then overlap
  // with the round trips to Entra), unless a decryption certificate in Key Vault needs its
  // managed-identity tokens first.
  let made: ReturnType<typeof createTokenAcquirer> | undefined;
  const acquirerNow = (): ReturnType<typeof createTokenAcquirer> => (made ??= createTokenAcquirer({ config, agent, logger }));
  // Token decryption certificates load before anything listens. A certificate that cannot be
  // loaded fails the start.
  let decryptionKeys;
  try {
    decryptionKeys = await loadDecryptionKeys(config.azureAd.tokenDecryptionCredentials, {
      keyVault: (desc) =>
        loadCertificateFromKeyVault(desc, { agent, timeoutMs: outbound.timeoutMs, maxResponseBytes: outbound.maxResponseBytes, managedIdentityToken: acquirerNow().managedIdentityAccessToken }),
    });
  } catch (err) {
    made?.close();
    await baseAgent.close();
    throw err;
  }
  const validator = createTokenValidator({
    azureAd: config.azureAd,
    settings: config.sidecar.validation,
    outbound: { agent, timeoutMs: outbound.timeoutMs, maxResponseBytes: outbound.maxResponseBytes },
    logger,
    decryptionKeys,
    onSigningKeysLoad: (outcome, keyCount) => {
      metrics.countSigningKeysRefresh(outcome);
      metrics.setSigningKeys(keyCount);
    },
  });
  // Keys load in the background (start() never rejects; it retries with backoff), begun before the
  // listeners so the round trips to Entra overlap with setting them up. Readiness follows
  // validator.ready() and the client credentials (see readiness() in listen()): /readyz on the
  // management listener and the gRPC health of the Authorization service.
  void validator.start();
  const engine = acquirerNow();
  try {
    return await listen(config, logger, { metrics, baseAgent, downstreamAgent, validator, engine });
  } catch (err) {
    // Nothing may keep a process that failed to start alive (the key loader retries on timers).
    validator.close();
    engine.close();
    await baseAgent.close();
    throw err;
  }
}

interface Core {
  readonly metrics: Metrics;
  readonly baseAgent: ReturnType<typeof createOutboundAgent>;
  readonly downstreamAgent: ReturnType<typeof observeOutbound>;
  readonly validator: ReturnType<typeof createTokenValidator>;
  readonly engine: ReturnType<typeof createTokenAcquirer>;
}

/**
 * Starts one listener; a failure names the listener, its address and the key that moves it. The
 * management (9090) and ext_authz (9191) listeners are on by default, and a pod's app may already
 * use one of those ports.
 */
async function binding<T>(what: string, addresses: readonly { host: string; port: number }[], remedy: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const where = addresses.map((a) => formatHostPort(a.host, a.port)).join(', ');
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`The ${what} listener could not start on ${where} (${why}); ${remedy}`, { cause: err });
  }
}

/** Starts the listeners over the core built by run(). */
async function listen(config: SidecarConfig, logger: Logger, core: Core): Promise<() => Promise<ShutdownReport>> {
  const { metrics, baseAgent, downstreamAgent, validator, engine } = core;
  const outbound = config.sidecar.outbound;
  /** What stands in the way of serving, as fixed phrases (docs/deployment.md, "Probes"). */
  const readiness = (): Readiness => {
    const reasons: string[] = [];
    if (!validator.ready()) reasons.push('signing_keys_not_loaded');
    if (!engine.clientCredentials.usable()) reasons.push('client_credentials_unusable');
    return { ready: reasons.length === 0, reasons };
  };
  metrics.addScrapeHook(() => metrics.syncTokenCache(engine.stats()));
  const acquirer = countAcquisitions(engine, metrics);

  const http: HttpApiServer = await binding('identity HTTP API', config.sidecar.http.listen, 'move it with Sidecar__Http__Url (or ASPNETCORE_URLS)', () => startHttpApi({
    config,
    logger,
    validator,
    acquirer,
    metrics,
    ...(config.sidecar.popValidation.replayCache ? { popReplayCache: new ReplayCache() } : {}),
    bodyBudget: new BodyBudget(config.sidecar.http.maxBufferedBodyBytes),
    downstream: {
      agent: downstreamAgent,
      acquirer,
      logger,
      logLimiter: createLogLimiter(LOG_LINES_PER_SECOND, logger.isLevelEnabled('debug')),
      settings: {
        allowOutboundRedirects: config.sidecar.allowOutboundRedirects,
        returnAllResponseHeaders: config.sidecar.downstreamApi.returnAllResponseHeaders,
        maxResponseBytes: config.sidecar.downstreamApi.maxResponseBytes,
        maxRedirects: config.sidecar.downstreamApi.maxRedirects,
        timeoutMs: outbound.timeoutMs,
      },
      ...(engine.httpRequestSigner ? { httpRequestSigner: engine.httpRequestSigner } : {}),
    },
  }));

  let extAuthz: ExtAuthzServer | undefined;
  if (config.sidecar.extAuthz.enabled) {
    // Loaded only here: a sidecar serving the HTTP API alone (Microsoft's drop-in) never evaluates
    // grpc-js and protobufjs, ~30 ms of a start on Node 24 (bench/README.md finding 41).
    const { startExtAuthzServer } = await import('./extauthz/server.js');
    extAuthz = await binding('ext_authz gRPC', [config.sidecar.extAuthz.address], 'move it with Sidecar__ExtAuthz__Address, or turn it off with Sidecar__ExtAuthz__Enabled=false', () => startExtAuthzServer({
      config,
      validator,
      acquirer,
      logger,
      metrics,
      ready: () => readiness().ready,
      resolveApiOptions: (apiName) =>
        Object.prototype.hasOwnProperty.call(config.downstreamApis, apiName)
          ? resolveApiOptions(config, apiName, new URLSearchParams(), false).options
          : undefined,
    }));
  }

  const management = config.sidecar.management.enabled
    ? await binding('management', [config.sidecar.management.address], 'move it with Sidecar__Management__Url, or turn it off with Sidecar__Management__Enabled=false', () => startManagementServer({
        address: config.sidecar.management.address,
        metrics,
        logger,
        readiness,
      }))
    : undefined;

  // The one line that says what was bound: written whatever the log level, because supervisors and
  // tests that start the sidecar on port 0 read their ports from it.
  const listening = {
    level: 'info',
    time: new Date().toISOString(),
    service: 'entra-sidecar',
    event: 'listening',
    http: http.addresses,
    extAuthz: extAuthz ? { host: extAuthz.host, port: extAuthz.port } : null,
    management: management ? { host: management.host, port: management.port } : null,
    environment: config.environment.name,
    version: VERSION,
    bundle: RUNS_FROM_BUNDLE,
    msg: 'entra-sidecar is listening',
  };
  process.stdout.write(JSON.stringify(listening) + '\n');
  // The client certificates load from here on, in the background: a PFX costs loading node-forge
  // and decrypting the file, which need not delay the listening line, and a certificate that cannot
  // be loaded must not fail the start (acquisition falls back to the next credential, as Microsoft's
  // sidecar does); readiness waits until one is usable.
  engine.clientCredentials.start();

  return async () => {
    // Readiness goes false and the listeners stop accepting at once; calls in flight finish within
    // the grace. Nothing waits for a prober to see the change: as a native sidecar (an init
    // container with restartPolicy Always) this one is stopped after the app and Envoy have exited,
    // so no new calls are coming (docs/deployment.md).
    management?.setShuttingDown();
    extAuthz?.setServing(false);
    const [httpCut, checksCut] = await Promise.all([http.close(SHUTDOWN_GRACE_MS), extAuthz?.close(SHUTDOWN_GRACE_MS) ?? 0]);
    await management?.close(1_000);
    validator.close();
    acquirer.close();
    // The listeners are closed, so no outbound call left has anyone to answer: the work of requests
    // cut at the end of the grace (a token request Entra holds, a slow downstream API) and background
    // key or token refreshes. close() would wait for them, up to Sidecar:Outbound:TimeoutMs each and
    // past the force exit; destroy() aborts them.
    await baseAgent.destroy();
    return { cutRequests: httpCut + checksCut };
  };
}

/**
 * Writes the line of a process failure (PROCESS_FAILURES) whatever the log level: at `None` a start
 * that fails would otherwise exit 1 without a word. The caller exits with the code's exit code.
 */
function logProcessFailure(logger: Logger, code: ProcessFailureCode, fields: Record<string, unknown>): void {
  unconditionalLogger(logger).fatal({ code, ...fields }, PROCESS_FAILURES[code].message);
  logger.flush();
}

/** Runs the sidecar process: configuration, logger, process handlers, `run()`, shutdown on signals. */
export async function main(): Promise<void> {
  const result = loadConfig(processConfigInputs());
  if (!result.ok) {
    // One JSON line like every other (the level itself may be one of the problems). The messages
    // name keys and never carry a secret (src/config/load.ts).
    logProcessFailure(createLogger('fatal'), 'config_invalid', { problems: result.errors });
    process.exitCode = PROCESS_FAILURES.config_invalid.exitCode;
    return;
  }
  const { config, warnings } = result;
  const logger = createLogger(config.sidecar.logLevel);
  // A SECURITY: warning is written at every level: docs/deployment.md promises it at start-up.
  for (const w of warnings) (w.startsWith('SECURITY:') ? unconditionalLogger(logger) : logger).warn({ event: 'config_warning' }, w);

  process.on('uncaughtException', (err) => {
    logProcessFailure(logger, 'uncaught_exception', { err: safeCause(err), stack: redactTokens(err.stack ?? '') });
    process.exit(PROCESS_FAILURES.uncaught_exception.exitCode);
  });
  process.on('unhandledRejection', (reason) => {
    logProcessFailure(logger, 'unhandled_rejection', reason instanceof Error ? { err: safeCause(reason), stack: redactTokens(reason.stack ?? '') } : { err: redactTokens(String(reason)).slice(0, 500) });
    process.exit(PROCESS_FAILURES.unhandled_rejection.exitCode);
  });

  // The signal handlers go in before the start: as PID 1 in a container, a process without a
  // SIGTERM handler does not get the signal at all, and a start can take a while (a Key Vault
  // decryption certificate is read before anything listens).
  let stop: (() => Promise<ShutdownReport>) | undefined;
  let stopping = false;
  const exitSoon = (code: number) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 50).unref();
  };
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ event: 'shutdown', signal }, 'shutting down');
    if (stop === undefined) {
      // Still starting: nothing has been served (the listening line is not out yet), so leave now.
      logger.info({ event: 'stopped', during: 'start' }, 'stopped before the start completed');
      logger.flush();
      exitSoon(0);
      return;
    }
    const force = setTimeout(() => {
      logProcessFailure(logger, 'shutdown_forced', { afterMs: SHUTDOWN_FORCE_EXIT_MS });
      process.exit(PROCESS_FAILURES.shutdown_forced.exitCode);
    }, SHUTDOWN_FORCE_EXIT_MS);
    force.unref();
    stop().then(
      ({ cutRequests }) => {
        if (cutRequests === 0) logger.info({ event: 'stopped', cutRequests }, 'stopped');
        else logger.warn({ event: 'stopped', cutRequests }, `stopped; ${cutRequests} request(s) still unanswered at the end of the ${SHUTDOWN_GRACE_MS / 1000} s grace were cut`);
        logger.flush();
        exitSoon(0);
      },
      (err: unknown) => {
        logger.error({ err: err instanceof Error ? safeCause(err) : redactTokens(String(err)).slice(0, 500) }, 'error during shutdown');
        logger.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  try {
    stop = await run(config, logger);
  } catch (err) {
    if (stopping) return; // a signal came during the start; it is already on its way out
    logProcessFailure(logger, 'start_failed', { err: redactTokens(err instanceof Error ? `${err.name}: ${err.message}` : String(err)) });
    // A listener that did bind (or a timer) must not keep a process that failed to start alive.
    process.exit(PROCESS_FAILURES.start_failed.exitCode);
  }
}
