/**
 * The parts of undici the sidecar uses (Agent, ProxyAgent, the request API, DecoratorHandler), loaded from
 * undici's own modules. `import 'undici'` loads every feature it has (fetch, WebSocket,
 * EventSource, caches, cookies, mocks): ≈130 ms and ≈8 MB at every start for code we never call.
 *
 * These paths are not undici's documented entry point, so test/core/undici.test.ts checks that each
 * export here is the very object `undici` exports; an upgrade that moves a file fails that test,
 * not production.
 */
import type * as Undici from 'undici';
import AgentClass from 'undici/lib/dispatcher/agent.js';
import DecoratorHandlerClass from 'undici/lib/handler/decorator-handler.js';
import DispatcherClass from 'undici/lib/dispatcher/dispatcher.js';
import ProxyAgentClass from 'undici/lib/dispatcher/proxy-agent.js';
import api from 'undici/lib/api/index.js';

export const Agent = AgentClass;
export const DecoratorHandler = DecoratorHandlerClass;
export const ProxyAgent = ProxyAgentClass;
/** undici's Dispatcher base class (dispatch, close, destroy; compose), for a dispatcher of our own. */
export { DispatcherClass };

// What undici's index does to give every dispatcher request()/stream()/…: the API lives on the prototype.
Object.assign(DispatcherClass.prototype, api);

export type RequestOptions = Omit<Undici.Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { dispatcher: Undici.Dispatcher; method?: Undici.Dispatcher.HttpMethod };

/** undici's `request(url, { dispatcher, … })`: one request on the given dispatcher (never the global one). */
export function request(url: string | URL, options: RequestOptions): Promise<Undici.Dispatcher.ResponseData> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const { dispatcher, ...rest } = options;
  return dispatcher.request({ ...rest, origin: u.origin, path: u.pathname + u.search, method: rest.method ?? 'GET' });
}
