import http from 'node:http';
import https from 'node:https';
import { z } from 'zod';
import { assertPublicUrl, createGuardedLookup } from '../../net/ssrf.js';

/**
 * The `http_fetch` tool of hosted agents: one HTTP(S) request to the public internet, with the
 * text of the answer returned to the model. Guarded against SSRF (every hop's scheme and
 * addresses are checked, and the connection itself uses a lookup that refuses private
 * addresses, so DNS rebinding cannot bypass the check), bounded in time and size, and only
 * text-like content is returned.
 */

export interface HttpFetchPolicy {
  /** Allows loopback/private targets: development and tests only. */
  allowPrivate: boolean;
  /** For the whole fetch, redirects included. */
  timeoutMs: number;
  /** The most response bytes read; the rest is cut off (and noted). */
  maxBytes: number;
}

export const defaultHttpFetchPolicy: HttpFetchPolicy = {
  allowPrivate: false,
  timeoutMs: 10_000,
  maxBytes: 256 * 1024,
};

export const MAX_REDIRECTS = 3;
const MAX_REQUEST_BODY_CHARS = 64 * 1024;

/** The tool as the model sees it (the `function` of an OpenAI function tool). */
export const httpFetchTool = {
  name: 'http_fetch',
  description:
    'Fetch a public http(s) URL and return the status, content type and text of the response ' +
    `(text-like content only, at most ${defaultHttpFetchPolicy.maxBytes / 1024} KiB by default; longer answers are truncated).`,
  parameters: {
    type: 'object',
    properties: {
      url: { type: 'string', description: 'An absolute http:// or https:// URL on the public internet' },
      method: { type: 'string', enum: ['GET', 'POST'], description: 'Default GET' },
      headers: { type: 'object', additionalProperties: { type: 'string' }, description: 'Extra request headers' },
      body: { type: 'string', description: 'Request body (POST only)' },
    },
    required: ['url'],
    additionalProperties: false,
  },
} as const;

export const HttpFetchArgs = z.object({
  url: z.string().min(1).max(2048),
  method: z.enum(['GET', 'POST']).default('GET'),
  headers: z.record(z.string(), z.string().max(8192)).optional(),
  body: z.string().max(MAX_REQUEST_BODY_CHARS).optional(),
});
export type HttpFetchArgsT = z.infer<typeof HttpFetchArgs>;

export interface HttpFetchResult {
  status: number;
  /** The URL that answered (after redirects). */
  url: string;
  content_type: string | null;
  body: string;
  truncated: boolean;
  redirects: number;
}

export class HttpFetchError extends Error {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'HttpFetchError';
  }
}

interface Hop {
  url: URL;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body: string | undefined;
}

// ---------------------------------------------------------------- request headers

/** Headers the caller may not set: framing, hop-by-hop, proxy and encoding. */
const FORBIDDEN_HEADERS = new Set([
  'host',
  'connection',
  'content-length',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'keep-alive',
  'accept-encoding',
  'proxy-authorization',
  'proxy-connection',
  'expect',
]);
/** Dropped when a redirect leaves the origin. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'cookie']);

function sanitizeHeaders(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const lower = name.toLowerCase();
    if (!FORBIDDEN_HEADERS.has(lower)) out[lower] = value;
  }
  return out;
}

function requestHeaders(hop: Hop): Record<string, string> {
  const headers: Record<string, string> = {
    'user-agent': 'task-escrow-agent/0.1',
    accept: 'text/*, application/json, application/xml;q=0.9, */*;q=0.1',
    ...hop.headers,
    // no compression: node:http does not decompress, and the size limit counts real bytes
    'accept-encoding': 'identity',
  };
  if (hop.body !== undefined) headers['content-length'] = String(Buffer.byteLength(hop.body));
  return headers;
}

// ---------------------------------------------------------------- one request

function sendRequest(hop: Hop, policy: HttpFetchPolicy, signal: AbortSignal): Promise<http.IncomingMessage> {
  const transport = hop.url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    let req: http.ClientRequest;
    try {
      req = transport.request(hop.url, {
        method: hop.method,
        headers: requestHeaders(hop),
        signal,
        lookup: createGuardedLookup({ allowPrivate: policy.allowPrivate }),
      });
    } catch (err) {
      reject(new HttpFetchError(`invalid request: ${errorMessage(err)}`, { cause: err }));
      return;
    }
    req.once('response', resolve);
    req.once('error', reject);
    req.end(hop.body);
  });
}

// ---------------------------------------------------------------- redirects

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

function nextHop(hop: Hop, status: number, location: string): Hop {
  let url: URL;
  try {
    url = new URL(location, hop.url);
  } catch {
    throw new HttpFetchError('the redirect location is not a valid URL');
  }
  const becomesGet = status === 303 || ((status === 301 || status === 302) && hop.method === 'POST');
  const sameOrigin = url.origin === hop.url.origin;
  const headers = sameOrigin
    ? hop.headers
    : Object.fromEntries(Object.entries(hop.headers).filter(([name]) => !CREDENTIAL_HEADERS.has(name)));
  return becomesGet ? { url, method: 'GET', headers, body: undefined } : { url, method: hop.method, headers, body: hop.body };
}

// ---------------------------------------------------------------- the response body

const TEXT_LIKE = [/^text\//, /^application\/(json|xml|javascript|ecmascript|x-www-form-urlencoded|x-yaml|yaml|x-ndjson)$/, /\+(json|xml)$/];

function mediaType(contentType: string | null): string | null {
  if (contentType === null) return null;
  return contentType.split(';')[0]?.trim().toLowerCase() ?? null;
}

/** Text-like content types; an answer without a content type is read as text. */
export function isTextLike(contentType: string | null): boolean {
  const type = mediaType(contentType);
  return type === null || type === '' || TEXT_LIKE.some((re) => re.test(type));
}

function charsetOf(contentType: string | null): string {
  const match = contentType?.match(/charset="?([\w.:-]+)"?/i);
  return match?.[1] ?? 'utf-8';
}

function decode(bytes: Buffer, contentType: string | null): string {
  try {
    return new TextDecoder(charsetOf(contentType)).decode(bytes);
  } catch {
    return new TextDecoder('utf-8').decode(bytes);
  }
}

/** Reads at most `maxBytes` of the stream, then stops reading and closes it. */
export async function readLimited(
  res: http.IncomingMessage,
  maxBytes: number,
  signal: AbortSignal,
): Promise<{ bytes: Buffer; truncated: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let truncated = false;
  const onAbort = (): void => {
    res.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      const room = maxBytes - size;
      if (chunk.length >= room) {
        chunks.push(chunk.subarray(0, room));
        size += room;
        truncated = chunk.length > room || res.readableLength > 0 || !res.complete;
        break;
      }
      chunks.push(chunk);
      size += chunk.length;
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    res.destroy();
  }
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
  return { bytes: Buffer.concat(chunks, size), truncated };
}

async function readResult(res: http.IncomingMessage, hop: Hop, redirects: number, policy: HttpFetchPolicy, signal: AbortSignal): Promise<HttpFetchResult> {
  const contentType = res.headers['content-type'] ?? null;
  const base = { status: res.statusCode ?? 0, url: hop.url.toString(), content_type: contentType, redirects };
  if (!isTextLike(contentType)) {
    res.destroy();
    return { ...base, body: `[content of type ${mediaType(contentType)} is not text and was not read]`, truncated: false };
  }
  const { bytes, truncated } = await readLimited(res, policy.maxBytes, signal);
  const text = decode(bytes, contentType);
  const body = truncated ? `${text}\n[truncated: the response is longer than ${policy.maxBytes} bytes]` : text;
  return { ...base, body, truncated };
}

// ---------------------------------------------------------------- the tool

function parseArgs(args: unknown): HttpFetchArgsT {
  const parsed = HttpFetchArgs.safeParse(args);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HttpFetchError(`invalid arguments: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'malformed'}`);
  }
  if (parsed.data.body !== undefined && parsed.data.method === 'GET') {
    throw new HttpFetchError('invalid arguments: a body needs method POST');
  }
  return parsed.data;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function describeFailure(err: unknown, timeout: AbortSignal, caller: AbortSignal): Error {
  if (caller.aborted) return caller.reason instanceof Error ? caller.reason : new Error('aborted');
  if (timeout.aborted) return new HttpFetchError('the request timed out', { cause: err });
  if (err instanceof Error && (err.name === 'UnsafeUrlError' || err.name === 'HttpFetchError')) return err;
  return new HttpFetchError(`request failed: ${errorMessage(err)}`, { cause: err });
}

/**
 * Runs one `http_fetch` call. Throws `UnsafeUrlError` (refused target), `HttpFetchError`
 * (bad arguments, too many redirects, timeout, network) or the caller's abort reason.
 */
export async function executeHttpFetch(args: unknown, policy: HttpFetchPolicy, signal: AbortSignal): Promise<HttpFetchResult> {
  const input = parseArgs(args);
  const timeout = AbortSignal.timeout(policy.timeoutMs);
  const combined = AbortSignal.any([signal, timeout]);
  try {
    let hop: Hop = { url: await assertPublicUrl(input.url, policy), method: input.method, headers: sanitizeHeaders(input.headers), body: input.body };
    for (let redirects = 0; ; redirects++) {
      const res = await sendRequest(hop, policy, combined);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (!isRedirect(status) || location === undefined) return await readResult(res, hop, redirects, policy, combined);
      res.destroy();
      if (redirects >= MAX_REDIRECTS) throw new HttpFetchError(`too many redirects (more than ${MAX_REDIRECTS})`);
      const next = nextHop(hop, status, location);
      // every hop passes the same check as the first URL
      hop = { ...next, url: await assertPublicUrl(next.url, policy) };
    }
  } catch (err) {
    throw describeFailure(err, timeout, signal);
  }
}
