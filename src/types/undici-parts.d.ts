/** undici's own modules that src/net/undici.ts imports (CommonJS, `module.exports = …`), typed as what undici's index exports. */
declare module 'undici/lib/dispatcher/agent.js' {
  const value: typeof import('undici').Agent;
  export = value;
}
declare module 'undici/lib/handler/decorator-handler.js' {
  const value: typeof import('undici').DecoratorHandler;
  export = value;
}
declare module 'undici/lib/dispatcher/dispatcher.js' {
  const value: typeof import('undici').Dispatcher;
  export = value;
}
declare module 'undici/lib/api/index.js' {
  /** request, stream, pipeline, connect, upgrade: what undici's index puts on Dispatcher.prototype. */
  const value: object;
  export = value;
}
declare module 'undici/lib/dispatcher/proxy-agent.js' {
  const value: typeof import('undici').ProxyAgent;
  export = value;
}
