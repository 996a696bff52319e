import { z } from 'zod';
import { OutboundError, outboundRequest, type OutboundResponse } from '../../net/outbound.js';
import { UnsafeUrlError, type Resolver } from '../../net/ssrf.js';

/**
 * The `http_fetch` tool of hosted agents: one HTTP(S) request to the public internet, with the
 * text of the answer returned to the model. Sent through src/net/outbound.ts: guarded against
 * SSRF (every hop's scheme and addresses are checked, and the connection goes to the addresses
 * that passed, so DNS rebinding cannot bypass the check), bounded in time and size; only
 * text-like content is returned.
 */

export interface HttpFetchPolicy {
  /** Allows loopback/private targets: development and tests only. */
  allowPrivate: boolean;
  /** For the whole fetch, redirects included. */
  timeoutMs: number;
  /** The most response bytes read; the rest is cut off (and noted). */
  maxBytes: number;
  /** Name resolution; default the system resolver (tests inject one). */
  resolver?: Resolver;
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

function sanitizeHeaders(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const lower = name.toLowerCase();
    if (!FORBIDDEN_HEADERS.has(lower)) out[lower] = value;
  }
  return out;
}

function requestHeaders(headers: Record<string, string>): Record<string, string> {
  return {
    'user-agent': 'task-escrow-agent/0.1',
    accept: 'text/*, application/json, application/xml;q=0.9, */*;q=0.1',
    ...headers,
    // no compression: node:http does not decompress, and the size limit counts real bytes
    'accept-encoding': 'identity',
  };
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

function toResult(res: OutboundResponse, policy: HttpFetchPolicy): HttpFetchResult {
  const header = res.headers['content-type'];
  const contentType = typeof header === 'string' ? header : null;
  const base = { status: res.status, url: res.url.toString(), content_type: contentType, redirects: res.redirects };
  if (res.body === null) {
    return { ...base, body: `[content of type ${mediaType(contentType)} is not text and was not read]`, truncated: false };
  }
  const text = decode(res.body, contentType);
  const body = res.truncated ? `${text}\n[truncated: the response is longer than ${policy.maxBytes} bytes]` : text;
  return { ...base, body, truncated: res.truncated };
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

function describeFailure(err: unknown, caller: AbortSignal): Error {
  if (caller.aborted) return caller.reason instanceof Error ? caller.reason : new Error('aborted');
  if (err instanceof OutboundError) {
    if (err.kind === 'timeout') return new HttpFetchError('the request timed out', { cause: err });
    if (err.kind === 'too_many_redirects' || err.kind === 'bad_redirect' || err.kind === 'invalid_request') {
      return new HttpFetchError(err.message, { cause: err });
    }
    return new HttpFetchError(`request failed: ${err.message}`, { cause: err });
  }
  if (err instanceof UnsafeUrlError) return err;
  return new HttpFetchError(`request failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/**
 * Runs one `http_fetch` call. Throws `UnsafeUrlError` (refused target), `HttpFetchError`
 * (bad arguments, too many redirects, timeout, network) or the caller's abort reason.
 */
export async function executeHttpFetch(args: unknown, policy: HttpFetchPolicy, signal: AbortSignal): Promise<HttpFetchResult> {
  const input = parseArgs(args);
  try {
    const res = await outboundRequest(input.url, {
      method: input.method,
      headers: requestHeaders(sanitizeHeaders(input.headers)),
      ...(input.body !== undefined ? { body: input.body } : {}),
      redirect: 'follow',
      maxRedirects: MAX_REDIRECTS,
      allowPrivate: policy.allowPrivate,
      timeoutMs: policy.timeoutMs,
      maxBytes: policy.maxBytes,
      oversize: 'truncate',
      // only text-like content is read; anything else is described, not returned
      readBody: (head) => isTextLike(typeof head.headers['content-type'] === 'string' ? head.headers['content-type'] : null),
      signal,
      ...(policy.resolver ? { resolver: policy.resolver } : {}),
    });
    return toResult(res, policy);
  } catch (err) {
    throw describeFailure(err, signal);
  }
}
