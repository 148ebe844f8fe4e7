/**
 * @azure/msal-node, imported on first use. It is the largest module the sidecar loads (≈100 ms and
 * ≈12 MB when imported alone on Node 20), and a sidecar that only validates tokens, or has not
 * acquired one yet, never needs it. The first acquisition goes
 * to Entra anyway, so it absorbs the import once.
 */
import type * as Msal from '@azure/msal-node';

export type MsalModule = typeof Msal;

let loaded: MsalModule | undefined;
let loading: Promise<MsalModule> | undefined;

/** msal-node, importing it on the first call; every call returns the same module. */
export function loadMsal(): Promise<MsalModule> {
  loading ??= import('@azure/msal-node').then((m) => (loaded = m));
  return loading;
}

/** msal-node when something has imported it already (an msal error can only exist then), else undefined. */
export function loadedMsal(): MsalModule | undefined {
  return loaded;
}

/** msal's logger options without the level, which is an msal enum (so it needs the module). */
export type MsalLoggerOptions = Omit<NonNullable<Msal.NodeSystemOptions['loggerOptions']>, 'logLevel'>;

/** msal's `system` options: our network client, our logger at warning level, no internal retries. */
export function msalSystem(msal: MsalModule, networkClient: Msal.INetworkModule, loggerOptions: MsalLoggerOptions): Msal.NodeSystemOptions {
  return { networkClient, loggerOptions: { ...loggerOptions, logLevel: msal.LogLevel.Warning }, disableInternalRetries: true };
}
