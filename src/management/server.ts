/**
 * The management listener (issue 7): `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
 * (Prometheus). It binds to all interfaces by default because kubelet probes target the pod IP,
 * not loopback (reference envoy-ext-authz §3, "Probes"); so it serves nothing sensitive: it never
 * mints, returns or reveals a token, and readiness reasons are fixed phrases chosen by main.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { ListenAddress } from '../config/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { listenTcp } from '../net/listen.js';

/** What readiness reports: not ready while anything in `reasons` stands in the way. */
export interface Readiness {
  readonly ready: boolean;
  readonly reasons: readonly string[];
}

export interface ManagementServerDeps {
  readonly address: ListenAddress;
  readonly metrics: Metrics;
  /** Called on every `/readyz`; must be cheap and must not call out (e.g. `validator.ready()`). */
  readonly readiness: () => Readiness;
  readonly logger: Logger;
}

export interface ManagementServer {
  /** The bound host and port (the real port when 0 was asked for). */
  readonly host: string;
  readonly port: number;
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then drops what is left. */
  close(graceMs: number): Promise<void>;
  /** From now on `/readyz` answers 503 (`shutting_down`), so traffic drains before the listeners close. */
  setShuttingDown(): void;
}

// Probes and scrapers send a handful of small headers; anything bigger is not one of them.
const MAX_HEADER_BYTES = 8 * 1024;
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const ALLOWED_METHODS = 'GET, HEAD';

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('content-type', contentType);
  res.setHeader('content-length', Buffer.byteLength(body));
  res.setHeader('cache-control', 'no-store');
  res.setHeader('x-content-type-options', 'nosniff');
  res.end(body);
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Starts the management listener on `deps.address`. */
export async function startManagementServer(deps: ManagementServerDeps): Promise<ManagementServer> {
  const { metrics, logger } = deps;
  let shuttingDown = false;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // No endpoint here takes a body; never read one, and do not keep a connection that sent one.
    if (hasBody(req)) res.setHeader('connection', 'close');
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path !== '/healthz' && path !== '/readyz' && path !== '/metrics') {
      send(res, 404, 'text/plain; charset=utf-8', 'Not found.');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', ALLOWED_METHODS);
      send(res, 405, 'text/plain; charset=utf-8', 'Method not allowed.');
      return;
    }
    switch (path) {
      case '/healthz':
        // Liveness means only "the event loop answers": never tied to Entra (reference Part 2 (c)).
        send(res, 200, 'text/plain; charset=utf-8', 'Healthy');
        return;
      case '/readyz': {
        const state = currentReadiness();
        const body = state.ready ? { status: 'ready' } : { status: 'not_ready', reasons: state.reasons };
        send(res, state.ready ? 200 : 503, 'application/json; charset=utf-8', JSON.stringify(body));
        return;
      }
      case '/metrics': {
        const text = await metrics.render();
        send(res, 200, metrics.contentType, text);
        return;
      }
    }
  }

  function currentReadiness(): Readiness {
    const reasons: string[] = [];
    if (shuttingDown) reasons.push('shutting_down');
    let state: Readiness;
    try {
      state = deps.readiness();
    } catch {
      // Fail closed: a readiness callback that throws means "not ready", never "ready".
      state = { ready: false, reasons: ['readiness_check_failed'] };
    }
    if (!state.ready) reasons.push(...(state.reasons.length > 0 ? state.reasons : ['not_ready']));
    return { ready: reasons.length === 0, reasons };
  }

  const server = createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // Node checks the timeouts above only every connectionsCheckingInterval (30 s by default).
      connectionsCheckingInterval: 1_000,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        logger.error({ event: 'management_error', err: err instanceof Error ? err.name : 'unknown' }, 'management request failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'Internal error.');
        else res.destroy();
      });
    },
  );
  server.maxRequestsPerSocket = 1_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    logger.debug({ event: 'management_client_error', code: err.code }, 'bad request on the management listener');
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable && !socket.destroyed) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    else socket.destroy();
  });

  await listenTcp(server, deps.address);
  const bound = server.address() as AddressInfo;
  logger.debug({ event: 'management_listening', host: bound.address, port: bound.port }, 'management listener is up');

  let closing: Promise<void> | undefined;
  return {
    host: bound.address,
    port: bound.port,
    setShuttingDown() {
      shuttingDown = true;
    },
    close(graceMs: number) {
      shuttingDown = true;
      closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), Math.max(0, graceMs));
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
