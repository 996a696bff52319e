import http from 'node:http';
import https from 'node:https';
import { pinnedLookup, resolvePublicTarget, UnsafeUrlError, type Resolver } from './ssrf.js';
import { describeError } from './redact.js';

/**
 * The one way the service calls out over HTTP (agents' webhooks, clients' callbacks, LLM
 * providers, the `http_fetch` tool):
 *
 * - **SSRF-safe, DNS pinned.** Each hop's URL is checked (`resolvePublicTarget`: http(s) only,
 *   no credentials, a name must resolve only to public addresses unless `allowPrivate`) and the
 *   connection goes to exactly the addresses that passed (`pinnedLookup`): the name is resolved
 *   once per hop, so a second, different answer (DNS rebinding) is never asked for. No
 *   connection pooling either: a pooled socket could outlive the check that opened it.
 * - **Redirects** are returned as they are (`redirect: 'manual'`, the default) or followed up to
 *   `maxRedirects`, each hop checked and pinned like the first (`'follow'`).
 * - **Bounded**: `timeoutMs` caps the whole exchange (resolution, redirects, the body), and at
 *   most `maxBytes` of the body are read (the rest is an error, or cut off with `oversize: 'truncate'`).
 * - **Redacted errors**: an `OutboundError` message never carries a URL's credentials or query,
 *   a bearer token or a secret the caller names in `secrets`.
 *
 * Throws `UnsafeUrlError` (from ./ssrf.ts) for a refused target, `OutboundError` otherwise.
 */

export interface OutboundRequest {
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** Lets loopback/private addresses through: development and tests only (`allowPrivateUrls(config)`). */
  allowPrivate: boolean;
  /** Caps the whole exchange, redirects and the body included. */
  timeoutMs: number;
  /** The most body bytes read. */
  maxBytes: number;
  /** `'error'` (default): a longer body is an `OutboundError('too_large')`; `'truncate'`: cut off and flagged. */
  oversize?: 'error' | 'truncate';
  /** `'manual'` (default): a 3xx is the answer; `'follow'`: followed, every hop checked again. */
  redirect?: 'manual' | 'follow';
  /** With `redirect: 'follow'`; default 3. */
  maxRedirects?: number;
  /** Whether to read the body of the final answer (default: always); an unread body is discarded. */
  readBody?: (head: ResponseHead) => boolean;
  /** The caller's cancellation (a task cancelled or timed out). */
  signal?: AbortSignal;
  /** Name resolution; default the system resolver. Tests inject a scripted one. */
  resolver?: Resolver;
  /** Secrets to keep out of error messages (API keys, shared secrets). */
  secrets?: ReadonlyArray<string | undefined>;
}

export interface ResponseHead {
  status: number;
  headers: http.IncomingHttpHeaders;
}

export interface OutboundResponse extends ResponseHead {
  /** The URL that answered (after redirects). */
  url: URL;
  redirects: number;
  /** The body read (at most maxBytes), or null when `readBody` declined it. */
  body: Buffer | null;
  /** True when the body was cut off at maxBytes (`oversize: 'truncate'`). */
  truncated: boolean;
}

export type OutboundFailure = 'timeout' | 'aborted' | 'network' | 'too_large' | 'too_many_redirects' | 'bad_redirect' | 'invalid_request';

export class OutboundError extends Error {
  readonly kind: OutboundFailure;

  constructor(kind: OutboundFailure, message: string) {
    super(message);
    this.name = 'OutboundError';
    this.kind = kind;
  }
}

export const DEFAULT_MAX_REDIRECTS = 3;

/** 408, 429 and 5xx: the other side may answer differently later. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** The body as UTF-8 text ('' when none was read). */
export function bodyText(res: OutboundResponse): string {
  return res.body ? res.body.toString('utf8') : '';
}

// ---------------------------------------------------------------- one hop

interface Hop {
  url: URL;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body: string | undefined;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

/** Rejects as soon as `signal` aborts (name resolution cannot be cancelled, only abandoned). */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

async function sendHop(hop: Hop, req: OutboundRequest, signal: AbortSignal): Promise<http.IncomingMessage> {
  // the check and the connection use the same resolution: the addresses that passed are pinned
  const target = await raceAbort(resolvePublicTarget(hop.url, { allowPrivate: req.allowPrivate, lookup: req.resolver }), signal);
  const transport = target.url.protocol === 'https:' ? https : http;
  const headers = { ...hop.headers };
  if (hop.body !== undefined) headers['content-length'] = String(Buffer.byteLength(hop.body));
  return new Promise((resolve, reject) => {
    let request: http.ClientRequest;
    try {
      request = transport.request(target.url, {
        method: hop.method,
        headers,
        signal,
        agent: false,
        ...(target.addresses.length > 0 ? { lookup: pinnedLookup(target.url.hostname, target.addresses) } : {}),
      });
    } catch (err) {
      reject(new OutboundError('invalid_request', `invalid request: ${describeError(err, req.secrets)}`));
      return;
    }
    request.once('response', resolve);
    // `on`, not `once`: a second error (an abort after a reset) must not go unhandled
    request.on('error', reject);
    request.end(hop.body);
  });
}

// ---------------------------------------------------------------- redirects

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** Dropped when a redirect leaves the origin. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);

function nextHop(hop: Hop, status: number, location: string): Hop {
  let url: URL;
  try {
    url = new URL(location, hop.url);
  } catch {
    throw new OutboundError('bad_redirect', 'the redirect location is not a valid URL');
  }
  const becomesGet = status === 303 || ((status === 301 || status === 302) && hop.method === 'POST');
  const headers =
    url.origin === hop.url.origin
      ? hop.headers
      : Object.fromEntries(Object.entries(hop.headers).filter(([name]) => !CREDENTIAL_HEADERS.has(name.toLowerCase())));
  if (!becomesGet) return { url, method: hop.method, headers, body: hop.body };
  const withoutBody = Object.fromEntries(Object.entries(headers).filter(([name]) => name.toLowerCase() !== 'content-type'));
  return { url, method: 'GET', headers: withoutBody, body: undefined };
}

// ---------------------------------------------------------------- the body

/**
 * Reads at most `maxBytes` of a response, then stops and closes it: a longer body is cut off
 * (`truncate`) or refused (`error`). Follows `signal`.
 */
export async function readBounded(
  res: http.IncomingMessage,
  maxBytes: number,
  oversize: 'error' | 'truncate',
  signal: AbortSignal,
): Promise<{ bytes: Buffer; truncated: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let truncated = false;
  const onAbort = (): void => void res.destroy(abortReason(signal));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      if (size + chunk.length > maxBytes) {
        if (oversize === 'error') throw new OutboundError('too_large', `response body exceeds ${maxBytes} bytes`);
        chunks.push(chunk.subarray(0, maxBytes - size));
        size = maxBytes;
        truncated = true;
        break;
      }
      chunks.push(chunk);
      size += chunk.length;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    res.destroy();
  }
  if (signal.aborted) throw abortReason(signal);
  return { bytes: Buffer.concat(chunks, size), truncated };
}

// ---------------------------------------------------------------- the request

function failure(err: unknown, caller: AbortSignal | undefined, timeout: AbortSignal, req: OutboundRequest): Error {
  if (caller?.aborted) return new OutboundError('aborted', 'the request was aborted');
  if (timeout.aborted) return new OutboundError('timeout', `no answer within ${req.timeoutMs} ms`);
  if (err instanceof UnsafeUrlError || err instanceof OutboundError) return err;
  return new OutboundError('network', describeError(err, req.secrets));
}

/** One outbound HTTP exchange; see the module comment. */
export async function outboundRequest(input: string | URL, req: OutboundRequest): Promise<OutboundResponse> {
  const timeout = AbortSignal.timeout(req.timeoutMs);
  const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
  const maxRedirects = req.redirect === 'follow' ? (req.maxRedirects ?? DEFAULT_MAX_REDIRECTS) : 0;
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new UnsafeUrlError('invalid_url', 'not a valid URL');
  }
  let hop: Hop = { url, method: req.method ?? 'GET', headers: req.headers ?? {}, body: req.body };
  try {
    for (let redirects = 0; ; redirects++) {
      const res = await sendHop(hop, req, signal);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (req.redirect === 'follow' && isRedirect(status) && location !== undefined) {
        res.destroy();
        if (redirects >= maxRedirects) throw new OutboundError('too_many_redirects', `too many redirects (more than ${maxRedirects})`);
        hop = nextHop(hop, status, location);
        continue;
      }
      const head = { status, headers: res.headers };
      if (req.readBody && !req.readBody(head)) {
        res.destroy();
        return { ...head, url: hop.url, redirects, body: null, truncated: false };
      }
      const { bytes, truncated } = await readBounded(res, req.maxBytes, req.oversize ?? 'error', signal);
      return { ...head, url: hop.url, redirects, body: bytes, truncated };
    }
  } catch (err) {
    throw failure(err, req.signal, timeout, req);
  }
}
