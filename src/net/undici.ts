/**
 * The three parts of undici the sidecar uses (Agent, the request API, DecoratorHandler), loaded from
 * undici's own modules. `import 'undici'` loads every feature it has (fetch, WebSocket,
 * EventSource, caches, cookies, mocks): ≈130 ms and ≈8 MB at every start for code we never call.
 *
 * These paths are not undici's documented entry point, so test/core/undici.test.ts checks that each
 * export here is the very object `undici` exports; an upgrade that moves a file fails that test,
 * not production.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const require = createRequire(import.meta.url);

export const Agent = require('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export const DecoratorHandler = require('undici/lib/handler/decorator-handler.js') as typeof Undici.DecoratorHandler;

// What undici's index does to give every dispatcher request()/stream()/…: the API lives on the prototype.
const DispatcherClass = require('undici/lib/dispatcher/dispatcher.js') as typeof Undici.Dispatcher;
Object.assign(DispatcherClass.prototype, require('undici/lib/api/index.js') as object);

export type RequestOptions = Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Undici.Dispatcher; method?: Undici.Dispatcher.HttpMethod };

/** undici's `request(url, { dispatcher, … })`: one request on the given dispatcher (never the global one). */
export function request(url: string | URL, options: RequestOptions): Promise<Undici.Dispatcher.ResponseData> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const { dispatcher, ...rest } = options;
  return dispatcher.request({ ...rest, origin: u.origin, path: u.pathname + u.search, method: rest.method ?? 'GET' });
}
