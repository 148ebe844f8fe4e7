/**
 * The Envoy ext_authz gRPC listener: `envoy.service.auth.v3.Authorization/Check` plus
 * `grpc.health.v1.Health`. Only v3 is registered; grpc-js answers UNIMPLEMENTED for the removed
 * v2/v2alpha names by itself (reference envoy-ext-authz §1.5). No reflection.
 */
import * as grpc from '@grpc/grpc-js';
import { constants as http2Constants } from 'node:http2';
import type { SidecarConfig } from '../config/types.js';
import { formatHostPort } from '../config/listeners.js';
import { bindWithFallback } from '../net/listen.js';
import { SidecarError } from '../errors.js';
import { setNewest } from '../bounded-map.js';
import { safeCause, type Logger } from '../log.js';
import type { EffectiveApiOptions, TokenAcquirer, TokenValidator } from '../pipeline/types.js';
import { createChecker, denyReason, renderDeny, type CheckRequest, type CheckResponse } from './check.js';
import { HealthService, type ServingStatus } from './health.js';
import { AUTHORIZATION_SERVICE, loadExtAuthzProtos, loadReflectionPackageDefinition } from './protos.js';
import { NOOP_METRICS, type Metrics } from '../metrics.js';
import type { ErrorCode } from '../errors.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from '../log-limit.js';
import { checkRequestBodyBytes } from './wire.js';
import { guardCalls } from './call-guard.js';
import { EXT_AUTHZ_TRANSPORT_MAX_BYTES } from '../config/defaults.js';

export interface ExtAuthzDeps {
  config: SidecarConfig;
  validator: TokenValidator;
  acquirer: TokenAcquirer;
  /** The named DownstreamApis entry with no overrides (ext_authz never takes optionsOverride); undefined = not configured. */
  resolveApiOptions: (apiName: string) => EffectiveApiOptions | undefined;
  logger: Logger;
  metrics?: Metrics;
  /**
   * Whether the sidecar can serve (signing keys loaded, a client credential usable): the
   * Authorization service's health is NOT_SERVING until it is. Default: `validator.ready()`.
   */
  ready?: () => boolean;
  now?: () => number;
}

export interface ExtAuthzServer {
  /** The bound host (`0.0.0.0` when `::` fell back on a host without IPv6). */
  host: string;
  /** The bound port (the real one when the configured port is 0). */
  port: number;
  /** `host:port` as bound. */
  address: string;
  /** Flips every health status to NOT_SERVING (draining) or back. */
  setServing(serving: boolean): void;
  /**
   * Stops accepting calls, lets running ones finish for up to `graceMs`, then cuts the rest. Resolves
   * with how many Checks were still undecided when the grace ended (0 when all finished in time).
   */
  close(graceMs: number): Promise<number>;
}

/** Encoded frozen responses kept for reuse (the warm allows of the busiest callers). */
const MAX_ENCODED_RESPONSES = 1024;

/**
 * grpc-js's own limit on a received message. A CheckRequest over `MaxReceiveMessageBytes` but under
 * this is answered in band, with a 431 (headers) or 413 (forwarded body) deny: a failed RPC would be
 * an *error* to Envoy, which `failure_mode_allow` (Istio's `failOpen`) turns into an allow, so a
 * client could pass unchecked by sending large headers or a large body. Envoy's own header limit tops
 * out at 8 MiB (`max_request_headers_kb`).
 */
const TRANSPORT_MAX_RECEIVE_BYTES = EXT_AUTHZ_TRANSPORT_MAX_BYTES;

/**
 * Calls one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; Node's and
 * grpc-js's default is 2^32-1). Envoy multiplexes the Checks to a cluster over a connection per
 * worker thread and caps those in flight with its circuit breaker (max_requests, 1,024 by default),
 * so one connection rarely carries more than a few hundred; should one reach the limit, Envoy's
 * HTTP/2 client (nghttp2) holds further calls until one finishes rather than failing them
 * (envoy#13933). What it bounds is a client that opens calls without end on one connection.
 */
const MAX_CONCURRENT_STREAMS = 1000;

/**
 * Node's own default for an HTTP/2 session's native memory (header tables, headers of open calls,
 * frames not yet written to a client that does not read), in MB, which grpc-js turns off: over it
 * Node refuses new calls on that connection with ENHANCE_YOUR_CALM. 1,000 open calls with 1.5 KB
 * of headers each fit in 2. It does not count the request bytes grpc-js holds (40 calls each
 * holding 15 MiB on one connection went on under it).
 */
const MAX_SESSION_MEMORY_MB = 10;

/**
 * A connection with no call open for this long is closed (GOAWAY; Envoy opens a new one when it next
 * needs it): a client that walked away does not keep its connection for the life of the process.
 */
const MAX_CONNECTION_IDLE_MS = 5 * 60_000;

/**
 * Pings a connection that has been quiet this long, and closes it if the ping is not answered within
 * KEEPALIVE_TIMEOUT_MS: a peer that vanished without closing (a node lost, a NAT dropped it) would
 * otherwise keep its connection and its open calls. Envoy answers pings.
 */
const KEEPALIVE_TIME_MS = 2 * 60_000;
const KEEPALIVE_TIMEOUT_MS = 20_000;

/** Stands in for a CheckRequest the handler denies without a decoded message; carries the deny. */
class Undecoded {
  readonly deny: CheckResponse;
  constructor(deny: CheckResponse) {
    this.deny = deny;
  }
}

/** How often Watch streams are re-evaluated (the validator's readiness has no change event). */
const HEALTH_POLL_MS = 500;

/** Starts the ext_authz gRPC server on `config.sidecar.extAuthz.address`; resolves once it listens. */
export async function startExtAuthzServer(deps: ExtAuthzDeps): Promise<ExtAuthzServer> {
  const { config, validator, logger } = deps;
  const metrics = deps.metrics ?? NOOP_METRICS;
  /** Counts one decision; the deny reason is the stable code the checker put in the body. */
  const observe = (response: CheckResponse, started: bigint): void => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (response.status?.code === 0) {
      metrics.observeCheck('allow', 'ok', seconds);
      return;
    }
    const reason: ErrorCode = denyReason(response) ?? 'internal';
    metrics.observeCheck('deny', reason, seconds);
    if (reason.startsWith('token_')) metrics.countValidationFailure(reason);
  };
  const options = config.sidecar.extAuthz;
  const protos = loadExtAuthzProtos();
  /** Checks still waiting on their decision (a warm one, decided at once, is never counted). */
  let undecided = 0;
  const checker = createChecker({
    options,
    validator,
    acquirer: deps.acquirer,
    resolveApiOptions: deps.resolveApiOptions,
    logger,
    httpStatusNames: protos.httpStatusNames,
    outboundTimeoutMs: config.sidecar.outbound.timeoutMs,
    ...(deps.now ? { now: deps.now } : {}),
  });
  const internalDeny = renderDeny(new SidecarError('internal'), protos.httpStatusNames);

  let serving = false;
  const ready = deps.ready ?? (() => validator.ready());
  const health = new HealthService(['', AUTHORIZATION_SERVICE], (service): ServingStatus | undefined => {
    if (service === '') return serving ? 'SERVING' : 'NOT_SERVING';
    if (service === AUTHORIZATION_SERVICE) return serving && ready() ? 'SERVING' : 'NOT_SERVING';
    return undefined;
  });

  const oversizedHeaders = new Undecoded(
    renderDeny(new SidecarError('request_headers_too_large', 'The CheckRequest is larger than Sidecar:ExtAuthz:MaxReceiveMessageBytes.'), protos.httpStatusNames),
  );
  const oversizedBody = new Undecoded(
    renderDeny(new SidecarError('request_body_too_large', 'The request body Envoy forwarded makes the CheckRequest larger than Sidecar:ExtAuthz:MaxReceiveMessageBytes.'), protos.httpStatusNames),
  );
  const undecodable = new Undecoded(renderDeny(new SidecarError('request_invalid', 'The CheckRequest is not a valid protobuf message.'), protos.httpStatusNames));
  // These denies are decided here, before the checker (and its log limiter) sees the request.
  const logLimiter = createLogLimiter(LOG_LINES_PER_SECOND, logger.isLevelEnabled('debug'));
  const logUndecoded = (code: ErrorCode, fields: Record<string, unknown>): void => {
    if (!logLimiter.allow(code)) return;
    logger.info({ code, ...fields, ...logLimiter.suppressed(code) }, 'ext_authz deny');
  };

  const transportMaxReceiveBytes = Math.max(options.maxReceiveMessageBytes, TRANSPORT_MAX_RECEIVE_BYTES);
  const server = new grpc.Server({
    'grpc.max_receive_message_length': transportMaxReceiveBytes,
    // No channelz service is exposed, so grpc-js need not keep its per-call bookkeeping (four
    // closures and two clock reads per Check).
    'grpc.enable_channelz': 0,
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    'grpc-node.max_session_memory': MAX_SESSION_MEMORY_MB,
    'grpc.max_connection_idle_ms': MAX_CONNECTION_IDLE_MS,
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
  });
  // The checker hands out frozen responses more than once (the warm allow per caller, token and
  // route; the preflight and internal denies): encode each of those once. A response built for one
  // call may still hold frozen parts the checker shares between callers (the status, and the
  // OkHttpResponse with the downstream token): those are encoded once too and the call's own fields
  // around them. A message is the concatenation of its encoded fields, so encoding each field as a
  // one-field CheckResponse and joining them in field-number order gives the same bytes.
  // grpc-js copies the bytes into its frame, so sharing them is safe.
  // Bounded and oldest-out (a WeakMap entry per first-sight response slowed every collection).
  const decodeRequest = protos.serverService.Check.requestDeserialize;
  const encodeResponse = protos.serverService.Check.responseSerialize;
  const fields = protos.checkResponseFields;
  const encoded = new Map<object, Buffer>();
  /** The encoding of a frozen message (a whole response, or one field's value as `{ [field]: value }`), made once. */
  const encodeFrozen = (frozen: object, field: string | undefined): Buffer => {
    let bytes = encoded.get(frozen);
    if (bytes === undefined) setNewest(encoded, frozen, (bytes = encodeResponse(field === undefined ? frozen : { [field]: frozen })), MAX_ENCODED_RESPONSES);
    return bytes;
  };
  const isFrozenObject = (value: unknown): value is object => typeof value === 'object' && value !== null && Object.isFrozen(value);
  const hasFrozenField = (response: Record<string, unknown>): boolean => {
    for (const name of fields) if (isFrozenObject(response[name])) return true;
    return false;
  };
  // Unfinished CheckRequests hold their bytes together under a budget (src/extauthz/call-guard.ts).
  // The deny's reader is any client behind the proxy: the table's message, not the setting's name.
  const budgetDeny = renderDeny(new SidecarError('request_body_budget_exceeded', undefined, { retryAfterSec: 1 }), protos.httpStatusNames);
  const budgetDenyMessage = encodeResponse(budgetDeny);
  const budgetDenyFrame = Buffer.alloc(5 + budgetDenyMessage.length);
  budgetDenyFrame.writeUInt32BE(budgetDenyMessage.length, 1);
  budgetDenyMessage.copy(budgetDenyFrame, 5);
  const callGuard = guardCalls({
    budgetBytes: options.maxBufferedRequestBytes,
    receiveTimeoutMs: options.requestReceiveTimeoutMs,
    ownsSession: (session) => ownsSession(server, session),
    denyFrame: budgetDenyFrame,
    onShed(bytes) {
      observe(budgetDeny, process.hrtime.bigint());
      logUndecoded('request_body_budget_exceeded', { bytes, limit: options.maxBufferedRequestBytes });
    },
    onTimeout(bytes) {
      metrics.countCheckReceiveTimeout();
      if (logLimiter.allow('receive_timeout')) logger.info({ bytes, timeoutMs: options.requestReceiveTimeoutMs, ...logLimiter.suppressed('receive_timeout') }, 'ext_authz call reset: its CheckRequest did not arrive whole in time');
    },
  });
  if (callGuard === undefined) logger.warn('ext_authz: this grpc-js release has no per-frame method to guard; unfinished CheckRequests are not bounded');

  const service = {
    ...protos.serverService,
    Check: {
      ...protos.serverService.Check,
      requestDeserialize(bytes: Buffer): CheckRequest | Undecoded {
        if (bytes.length <= options.maxReceiveMessageBytes) {
          // A throw here would fail the RPC (grpc-js answers INTERNAL), which Envoy reads as an
          // error and failure_mode_allow turns into an allow: bytes that do not decode are a deny.
          try {
            return decodeRequest(bytes) as CheckRequest;
          } catch (err) {
            logUndecoded('request_invalid', { bytes: bytes.length, ...(err instanceof Error ? { cause: safeCause(err) } : {}) });
            return undecodable;
          }
        }
        // With body forwarding on, the body is what usually overflows. It is told apart by reading
        // only the length prefixes down to it (no decoding): the request would have fitted without
        // the body → 413, otherwise the headers (or other attributes) are too large → 431.
        const body = checkRequestBodyBytes(bytes);
        const undecoded = body > 0 && bytes.length - body <= options.maxReceiveMessageBytes ? oversizedBody : oversizedHeaders;
        logUndecoded(denyReason(undecoded.deny) ?? 'internal', { bytes: bytes.length, bodyBytes: body, limit: options.maxReceiveMessageBytes });
        return undecoded;
      },
      responseSerialize(response: Record<string, unknown>): Buffer {
        if (Object.isFrozen(response)) return encodeFrozen(response, undefined);
        if (!hasFrozenField(response)) return encodeResponse(response);
        const parts: Buffer[] = [];
        for (const name of fields) {
          const value = response[name];
          if (value === undefined || value === null) continue;
          parts.push(isFrozenObject(value) ? encodeFrozen(value, name) : encodeResponse({ [name]: value }));
        }
        return Buffer.concat(parts);
      },
    },
  };
  server.addService(service, {
    Check(call: grpc.ServerUnaryCall<CheckRequest | Undecoded, CheckResponse>, callback: grpc.sendUnaryData<CheckResponse>) {
      const started = process.hrtime.bigint();
      const request = call.request;
      if (request instanceof Undecoded) {
        callback(null, request.deny);
        observe(request.deny, started);
        return;
      }
      const d = call.getDeadline();
      let decided: CheckResponse | Promise<CheckResponse>;
      try {
        decided = checker.check(request, d instanceof Date ? d.getTime() : d);
      } catch (err) {
        decided = Promise.reject(err);
      }
      if (!(decided instanceof Promise)) {
        callback(null, decided);
        observe(decided, started);
        return;
      }
      undecided++;
      decided.then(
        (response) => {
          undecided--;
          callback(null, response);
          observe(response, started);
        },
        (err: unknown) => {
          undecided--;
          // The checker renders every failure itself; this is the last line that keeps a deny a deny.
          logger.error({ cause: err instanceof Error ? err.name : typeof err }, 'ext_authz Check failed unexpectedly');
          callback(null, internalDeny);
          observe(internalDeny, started);
        },
      );
    },
  });
  health.addToServer(server);
  // Off by default: reflection tells any caller of the port which services exist (grpcurl and
  // friends need it; Envoy does not).
  // Loaded only then: @grpc/reflection and proto-loader, and the file descriptors it serves, built
  // from the descriptor the service runs on.
  if (options.reflection) {
    const { ReflectionService } = await import('@grpc/reflection');
    new ReflectionService(await loadReflectionPackageDefinition(), { services: [AUTHORIZATION_SERVICE] }).addToServer(server);
  }

  let boundHost = options.address.host;
  const port = await bindWithFallback(options.address.host, (host) => {
    boundHost = host;
    return new Promise<number>((resolve, reject) => {
      server.bindAsync(formatHostPort(host, options.address.port), grpc.ServerCredentials.createInsecure(), (err, boundPort) => (err ? reject(err) : resolve(boundPort)));
    });
  });
  serving = true;
  const poll = setInterval(() => health.refresh(), HEALTH_POLL_MS);
  poll.unref();
  const address = formatHostPort(boundHost, port);
  logger.info({ address }, 'ext_authz gRPC server listening');

  let closing: Promise<number> | undefined;
  return {
    host: boundHost,
    port,
    address,
    setServing(value) {
      serving = value;
      health.refresh();
    },
    close(graceMs) {
      closing ??= new Promise<number>((resolve) => {
        serving = false;
        health.refresh();
        clearInterval(poll);
        callGuard?.close();
        // Watch streams never end by themselves; tryShutdown would wait for them.
        health.endWatches();
        const force = setTimeout(() => {
          const cut = undecided;
          destroySessions(server);
          server.forceShutdown();
          resolve(cut);
        }, graceMs);
        force.unref();
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve(0);
        });
      });
      return closing;
    },
  };
}

/**
 * The connection sets of grpc-js's listeners (grpc-js 1.14: the private `http2Servers`, a Map from
 * each node:http2 server to `{ sessions, … }`); grpc-js gives no public way to reach the
 * connections or calls. Read defensively: none when a release changes that shape (a test fails then).
 */
function sessionSets(server: grpc.Server): Set<unknown>[] {
  const listeners = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(listeners instanceof Map)) return [];
  const sets: Set<unknown>[] = [];
  for (const listener of listeners.values() as Iterable<{ sessions?: unknown }>) if (listener?.sessions instanceof Set) sets.push(listener.sessions);
  return sets;
}

/** Whether `session` is a connection of one of the server's listeners. */
function ownsSession(server: grpc.Server, session: unknown): boolean {
  return sessionSets(server).some((sessions) => sessions.has(session));
}

/**
 * Cuts every connection the server holds. grpc-js's forceShutdown() destroys only the sessions it
 * keeps for channelz, and with channelz off (above) it keeps none there, so Checks in flight would
 * run on past the grace (its other record of sessions is per listener, sessionSets()). Should a
 * release change that shape, nothing is destroyed here and forceShutdown() does what it does, and
 * the process's own deadline still ends the shutdown.
 */
function destroySessions(server: grpc.Server): void {
  for (const sessions of sessionSets(server)) {
    for (const session of sessions as Set<{ destroy?: (err?: Error, code?: number) => void }>) session.destroy?.(undefined, http2Constants.NGHTTP2_CANCEL);
  }
}
