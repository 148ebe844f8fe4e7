/**
 * Test helpers for the emulator tests: an msal-node `INetworkModule` on undici trusting the
 * emulator CA (reference §1.8 option A), raw HTTP calls, and JWT decoding.
 */
import { Agent, request } from 'undici';
import type { INetworkModule, NetworkRequestOptions, NetworkResponse } from '@azure/msal-node';

/** A POST or GET the network client sent (kept so tests can inspect assertions msal built). */
export interface SentRequest {
  method: 'GET' | 'POST';
  url: string;
  body?: string;
}

/** msal network client on undici with the emulator CA as the only extra trust anchor. */
export class UndiciNetworkClient implements INetworkModule {
  readonly sent: SentRequest[] = [];
  private readonly agent: Agent;

  constructor(caPem?: string) {
    this.agent = new Agent(caPem ? { connect: { ca: caPem } } : {});
  }

  async sendGetRequestAsync<T>(url: string, options?: NetworkRequestOptions, timeout?: number): Promise<NetworkResponse<T>> {
    this.sent.push({ method: 'GET', url });
    return this.send<T>('GET', url, options, timeout);
  }

  async sendPostRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    this.sent.push({ method: 'POST', url, body: options?.body });
    return this.send<T>('POST', url, options);
  }

  private async send<T>(method: 'GET' | 'POST', url: string, options?: NetworkRequestOptions, timeout?: number): Promise<NetworkResponse<T>> {
    const res = await request(url, {
      method,
      headers: options?.headers,
      body: options?.body,
      dispatcher: this.agent,
      headersTimeout: timeout ?? 10_000,
      bodyTimeout: timeout ?? 10_000,
    });
    const text = await res.body.text();
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: res.statusCode, headers, body: body as T };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/** Raw HTTP response as tests see it. */
export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: Record<string, unknown>;
}

/** Sends a request with undici, trusting `caPem` for https. */
export async function call(agent: Agent, url: string, init: { method?: string; headers?: Record<string, string>; body?: string; form?: Record<string, string> } = {}): Promise<RawResponse> {
  const headers = { ...init.headers };
  let body = init.body;
  if (init.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded;charset=utf-8';
    body = new URLSearchParams(init.form).toString();
  }
  const res = await request(url, { method: (init.method ?? (body !== undefined ? 'POST' : 'GET')) as 'GET', headers, body, dispatcher: agent });
  const text = await res.body.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = {};
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** Decodes a compact JWS part (0 header, 1 payload) without verification. */
export function decodePart(token: string, part: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[part], 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Parses a form body. */
export function parseForm(body: string | undefined): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(body ?? ''));
}
