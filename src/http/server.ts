/**
 * The identity HTTP API: Microsoft-compatible routes on node:http. This file owns the cross-cutting
 * behaviour of reference sidecar-http-api §1.3 (loopback-only callers, case-insensitive routing,
 * 404/405 with empty bodies, no-cache on 2xx) and the limits (header/body size, timeouts); the
 * routes themselves are thin adapters over the pipeline in routes.ts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { safeCause, type Logger } from '../log.js';
import { ERROR_TABLE, toSidecarError } from '../errors.js';
import { sendChallenge, sendEmpty, sendProblem } from './problem.js';
import { ROUTES, type Route, type RouteContext, type RouteDeps } from './routes.js';
import { isLoopback } from './loopback.js';
import { browserRefusal, type BrowserRefusal, type HostRule } from './browser-guard.js';
import { listenTcp } from '../net/listen.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from '../log-limit.js';

export interface HttpApiServer {
  readonly servers: readonly Server[];
  /** `host:port` of every listener, in config order. */
  readonly addresses: readonly { host: string; port: number }[];
  /**
   * Stops accepting, lets requests in flight finish for up to `graceMs`, then cuts the connections
   * left. Resolves with how many requests were still unanswered when the grace ended (0 when all
   * finished in time).
   */
  close(graceMs: number): Promise<number>;
}

/** The request handler, and how many requests it is still working on. */
export interface HttpHandler {
  (req: IncomingMessage, res: ServerResponse): void;
  /** Requests whose route has not settled yet; one answered at once (a warm one) is never counted. */
  unsettled(): number;
}

/** The metrics `route` of requests no route handled: refused callers, 404s and 405s. */
const UNROUTED = 'unrouted';

/** The query of every request that has none: shared, so it refuses to change. */
class ReadOnlySearchParams extends URLSearchParams {
  override append(): never {
    throw new TypeError('read-only query');
  }
  override set(): never {
    throw new TypeError('read-only query');
  }
  override delete(): never {
    throw new TypeError('read-only query');
  }
  override sort(): never {
    throw new TypeError('read-only query');
  }
}
const EMPTY_QUERY: URLSearchParams = new ReadOnlySearchParams();

/** The path of a request target split for routing, without an array per request. */
interface RoutedPath {
  /** The first segment, lower-cased ('' for `/`). */
  readonly first: string;
  /** The second segment as sent ('' when there is none). */
  readonly second: string;
  /** Non-empty segments. */
  readonly count: number;
}

/** Splits `path` on `/`, ignoring empty segments (as `path.split('/').filter(Boolean)` would). */
export function routedPath(path: string): RoutedPath {
  let first = '';
  let second = '';
  let count = 0;
  let start = 0;
  while (start <= path.length) {
    let slash = path.indexOf('/', start);
    if (slash < 0) slash = path.length;
    if (slash > start) {
      if (count === 0) first = path.slice(start, slash).toLowerCase();
      else if (count === 1) second = path.slice(start, slash);
      count++;
    }
    start = slash + 1;
  }
  return { first, second, count };
}

/** Whether `path` is exactly `/healthz`, in any letter case (the loopback exemption, §1.3). */
function isHealthzPath(path: string): boolean {
  return path.length === 8 && path.toLowerCase() === '/healthz';
}

/**
 * Whether the request is a Development read of the OpenAPI document (`GET`/`HEAD`, exactly
 * `/openapi/v1.json` in any letter case, as the route compares it). Microsoft serves it to a browser
 * tab in Development (reference sidecar-http-api §1); it holds no secret, so browser marks are let
 * through for it. The Host rule still applies: a tab on `localhost:5000` passes it, and one rule for
 * every route is one less exception to reason about.
 */
function isOpenApiRead(req: IncomingMessage, path: string, development: boolean): boolean {
  return development && (req.method === 'GET' || req.method === 'HEAD') && path.length === 16 && path.toLowerCase() === '/openapi/v1.json';
}

/** Routes by lower-cased first segment (several may share one and differ in count or mode). */
const ROUTES_BY_FIRST = new Map<string, Route[]>();
for (const r of ROUTES) {
  for (const first of r.firstSegments) {
    const list = ROUTES_BY_FIRST.get(first);
    if (list === undefined) ROUTES_BY_FIRST.set(first, [r]);
    else list.push(r);
  }
}

function matchRoute(first: string, count: number, development: boolean): Route | undefined {
  const candidates = ROUTES_BY_FIRST.get(first);
  if (candidates !== undefined) for (const r of candidates) if (r.matches(first, count, development)) return r;
  return undefined;
}

/**
 * The Authorization header, read from `rawHeaders` so a warm request does not build the header
 * object. Two or more lines are joined with ",", as ASP.NET's StringValues.ToString() hands them to
 * JwtBearer in Microsoft's sidecar: no credential parses from that, so the request is refused (401),
 * where `req.headers` would keep the first line alone and authenticate whichever came first.
 */
export function authorizationHeader(req: IncomingMessage): string | undefined {
  const raw = req.rawHeaders;
  let value: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 13 && name.toLowerCase() === 'authorization') value = value === undefined ? raw[i + 1] : `${value},${raw[i + 1]}`;
  }
  return value;
}

/** Creates the request handler (exported for tests that drive it without a socket). */
export function createHandler(deps: RouteDeps): HttpHandler {
  const { config, logger } = deps;
  let unsettled = 0;
  const logLimiter = createLogLimiter(LOG_LINES_PER_SECOND, logger.isLevelEnabled('debug'));
  const development = config.environment.isDevelopment;
  const hostRule: HostRule = { allowedHosts: new Set(config.sidecar.http.allowedHosts), development };
  /** Answers a request no route takes: an empty body, counted under `unrouted`, its body drained. */
  function unrouted(req: IncomingMessage, res: ServerResponse, status: number, headers?: Record<string, string>): void {
    sendEmpty(res, status, headers);
    deps.metrics.observeHttpRequest(UNROUTED, status, 0);
    req.resume();
  }
  /** A refusal before routing (the caller, not the request, is wrong): a rate-limited warning, then `unrouted` with the code's status. */
  function refuse(req: IncomingMessage, res: ServerResponse, code: 'caller_not_loopback' | BrowserRefusal['code'], header: string | undefined, message: string): void {
    if (logLimiter.allow(code)) logger.warn({ code, peer: req.socket.remoteAddress, ...(header !== undefined ? { header } : {}), ...logLimiter.suppressed(code) }, message);
    unrouted(req, res, ERROR_TABLE[code].httpStatus);
  }
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    // A plain scan rather than new URL() on the hot path: the routes need only the path segments
    // and the query. Dot segments are not resolved, so `/healthz/../Validate` is not /healthz.
    let target = req.url ?? '/';
    // Absolute-form targets (RFC 9112 §3.2.2) carry scheme and authority; only the path matters here.
    if (!target.startsWith('/')) {
      const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?]*/i.exec(target);
      target = m ? target.slice(m[0].length) || '/' : '/';
    }
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    const { first, second, count } = routedPath(path);

    // §1.3 step 1: loopback-only callers outside Development; /healthz is exempt for probes. The
    // exemption compares the whole path, case-insensitively, as Microsoft's LocalCallerRestriction
    // does: `/healthz/` and `//healthz` still route to the health check below, but only for a
    // loopback caller.
    const healthz = isHealthzPath(path);
    if (!development && !healthz && !isLoopback(req.socket.remoteAddress)) {
      refuse(req, res, 'caller_not_loopback', undefined, 'refused a non-loopback caller');
      return;
    }
    // A browser on this machine is a loopback peer too (browser-guard.ts); probes are exempt as above.
    // The Host rule holds in Development too (wider there), since a rebinding page needs no peer rule
    // to be lifted; the OpenAPI document is exempt from the browser marks only.
    const refusal = healthz ? undefined : browserRefusal(req, hostRule);
    if (refusal !== undefined && !(refusal.code === 'request_from_browser' && isOpenApiRead(req, path, development))) {
      refuse(req, res, refusal.code, refusal.header, 'refused a request a web browser sent');
      return;
    }

    const route = matchRoute(first, count, development);
    if (route === undefined) {
      unrouted(req, res, 404);
      return;
    }
    // Exactly the route's method, as ASP.NET's MapGet/MapPost (HEAD included) answer 405 otherwise;
    // /healthz has no method constraint (MapHealthChecks).
    if (route.method !== 'ANY' && req.method !== route.method) {
      unrouted(req, res, 405, { Allow: route.method });
      return;
    }

    let apiName = '';
    if (count > 1) {
      try {
        apiName = decodeURIComponent(second);
      } catch {
        // A name that is no percent-encoding names no API: routed nowhere, like any other 404.
        unrouted(req, res, 404);
        return;
      }
    }
    const started = performance.now();
    const ctx: RouteContext = {
      req,
      res,
      path,
      query: q < 0 || q === target.length - 1 ? EMPTY_QUERY : new URLSearchParams(target.slice(q + 1)),
      apiName,
      authorization: authorizationHeader(req),
      logLimiter,
    };
    // A warm request is answered synchronously (no promise); the rest settle later. The duration
    // runs until the answer is handed to the socket (or the request failed).
    let pending: void | Promise<void>;
    try {
      pending = route.handle(ctx, deps);
    } catch (err) {
      fail(err, route.name, req, res);
      observe(route.name, res, started);
      return;
    }
    if (pending === undefined) {
      observe(route.name, res, started);
    } else {
      unsettled++;
      pending.then(
        () => {
          unsettled--;
          observe(route.name, res, started);
        },
        (err: unknown) => {
          unsettled--;
          fail(err, route.name, req, res);
          observe(route.name, res, started);
        },
      );
    }
  };
  return Object.assign(handle, { unsettled: () => unsettled });

  function observe(routeName: string, res: ServerResponse, started: number): void {
    deps.metrics.observeHttpRequest(routeName, res.statusCode, (performance.now() - started) / 1000);
  }

  function fail(err: unknown, routeName: string, req: IncomingMessage, res: ServerResponse): void {
    const e = toSidecarError(err);
    if (e.code.startsWith('token_')) deps.metrics.countValidationFailure(e.code);
    const level = e.spec.logLevel;
    if (logger.isLevelEnabled(level) && logLimiter.allow(e.code)) {
      const requestId = req.headers['x-request-id'];
      logger[level]({ code: e.code, route: routeName, ...(typeof requestId === 'string' && requestId.length <= 128 ? { requestId } : {}), cause: e.cause instanceof Error ? safeCause(e.cause) : undefined, detail: e.detail, ...logLimiter.suppressed(e.code) }, 'request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (e.spec.challengeOnly) {
      sendChallenge(res, e);
    } else {
      sendProblem(res, e);
    }
    req.resume();
  }
}

/** Starts one node:http server per configured listener. */
export async function startHttpApi(deps: RouteDeps): Promise<HttpApiServer> {
  const { config } = deps;
  const handler = createHandler(deps);
  const servers: Server[] = [];
  const addresses: { host: string; port: number }[] = [];
  for (const listen of config.sidecar.http.listen) {
    const server = createServer(
      {
        maxHeaderSize: config.sidecar.http.maxHeaderBytes,
        requestTimeout: config.sidecar.http.requestTimeoutMs,
        headersTimeout: config.sidecar.http.headersTimeoutMs,
        // Node enforces the two timeouts above only when it sweeps connections, every 30 s by
        // default, so a slowloris client would otherwise hold a socket up to 30 s past the limit.
        connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(config.sidecar.http.headersTimeoutMs / 2))),
        // Kestrel's 130 s by default, not Node's 5 s: a client that pools connections longer than the
        // server keeps them (.NET 1 min idle, Go 90 s, Python without limit) races the server's close
        // and can see ECONNRESET on a request it cannot safely retry, such as POST /DownstreamApi.
        // headersTimeout does not run while a connection is idle (Node ≥ 18 times only requests
        // being parsed), and close() closes idle connections at once.
        keepAliveTimeout: config.sidecar.http.keepAliveTimeoutMs,
      },
      handler,
    );
    server.on('clientError', (_err, socket) => {
      // Oversized headers (431) and malformed requests never reach the handler.
      const code = (_err as { code?: string }).code;
      if (socket.writable) {
        const status = code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
        socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      } else {
        socket.destroy();
      }
    });
    await listenTcp(server, listen);
    const info = server.address() as AddressInfo;
    servers.push(server);
    addresses.push({ host: info.address, port: info.port });
  }
  return {
    servers,
    addresses,
    async close(graceMs: number) {
      let cut = 0;
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                // One handler serves every listener, so this counts them all (not added up per server).
                cut = handler.unsettled();
                server.closeAllConnections();
              }, graceMs);
              timer.unref();
              // Keep-alive sockets that finish their in-flight request during the drain become idle
              // later; close them as they do instead of waiting for keepAliveTimeout.
              const sweep = setInterval(() => server.closeIdleConnections(), 50);
              sweep.unref();
              server.close(() => {
                clearTimeout(timer);
                clearInterval(sweep);
                resolve();
              });
              server.closeIdleConnections();
            }),
        ),
      );
      return cut;
    },
  };
}
