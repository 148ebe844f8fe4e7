/**
 * Fixtures for the downstream API tests: a loopback HTTP server that records exactly what it
 * received, a fake TokenAcquirer that records every AcquireRequest, and option/dependency builders.
 */
import { defaultApiOptions } from '../../src/pipeline/api-options.js';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createOutboundAgent } from '../../src/net/outbound.js';
import { createLogger } from '../../src/log.js';
import { createLogLimiter, LOG_LINES_PER_SECOND } from '../../src/log-limit.js';
import type { AcquireRequest, AcquiredToken, EffectiveApiOptions, TokenAcquirer } from '../../src/pipeline/types.js';
import type { DownstreamCallDeps } from '../../src/downstream/call.js';

export interface ReceivedRequest {
  readonly method: string;
  /** Path and query exactly as sent on the request line. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export interface RecordingServer {
  readonly origin: string;
  readonly port: number;
  readonly received: ReceivedRequest[];
  handler: Handler;
  close(): Promise<void>;
}

/** Starts a server on 127.0.0.1:0 that records each request, then lets `handler` answer. */
export async function startRecordingServer(handler: Handler = (_q, res) => res.end()): Promise<RecordingServer> {
  const received: ReceivedRequest[] = [];
  const state = { handler };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      state.handler(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    received,
    get handler() {
      return state.handler;
    },
    set handler(h: Handler) {
      state.handler = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A TokenAcquirer that hands out `token-1`, `token-2`, ... and records every request. */
export class FakeAcquirer implements TokenAcquirer {
  readonly requests: AcquireRequest[] = [];
  /** No warm path: every request goes through acquire(), which records it. */
  cached(): undefined {
    return undefined;
  }
  scheme = 'Bearer';

  async acquire(req: AcquireRequest): Promise<AcquiredToken> {
    this.requests.push(req);
    return { scheme: this.scheme, token: `token-${this.requests.length}`, expiresOn: Math.floor(Date.now() / 1000) + 3600 };
  }

  close(): void {}
}

/** Effective options as the options resolver would produce them for a configured API. */
export function apiOptions(baseUrl: string | undefined, over: Partial<EffectiveApiOptions> = {}): EffectiveApiOptions {
  return {
    ...defaultApiOptions(),
    apiName: 'TestApi',
    ...(baseUrl === undefined ? {} : { baseUrl }),
    scopes: ['api://downstream/.default'],
    requestAppToken: true,
    ...over,
  };
}

export interface TestDeps extends DownstreamCallDeps {
  acquirer: FakeAcquirer;
  /** Every log line written, as parsed JSON. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/** Real outbound Agent, fake acquirer, capturing logger. */
export function makeDeps(settings: Partial<DownstreamCallDeps['settings']> = {}): TestDeps {
  const logs: Record<string, unknown>[] = [];
  const agent = createOutboundAgent({ extraCaFiles: [], connectTimeoutMs: 2_000, timeoutMs: 5_000 });
  const logger = createLogger('debug', { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  return {
    agent,
    acquirer: new FakeAcquirer(),
    settings: { allowOutboundRedirects: false, returnAllResponseHeaders: false, maxResponseBytes: 1024 * 1024, maxRedirects: 5, timeoutMs: 3_000, ...settings },
    logger,
    // Unlimited, as production's is at debug level (this logger's).
    logLimiter: createLogLimiter(LOG_LINES_PER_SECOND, true),
    logs,
    close: () => agent.close(),
  };
}

export const noBody = { body: Buffer.alloc(0) };
