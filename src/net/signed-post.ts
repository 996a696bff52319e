import { outboundRequest, type OutboundRequest, type OutboundResponse } from './outbound.js';
import { EVENT_HEADER, SIGNATURE_HEADER, signWebhook } from './signing.js';

/**
 * A signed JSON POST (webhooks to agents, callbacks to clients) through the one outbound
 * client: DNS pinned, redirects never followed (a 3xx is the answer), time- and size-capped.
 * The shared secret signs the body and is kept out of every error message.
 */

export interface SignedPost {
  url: string;
  secret: string;
  /** The `x-task-escrow-event` header. */
  event: string;
  body: string;
  /** Unix seconds of the signature. */
  timestamp: number;
  userAgent: string;
  headers?: Record<string, string>;
  allowPrivate: boolean;
  timeoutMs: number;
  maxBytes: number;
  signal?: AbortSignal;
  readBody?: OutboundRequest['readBody'];
  resolver?: OutboundRequest['resolver'];
}

export function postSigned(req: SignedPost): Promise<OutboundResponse> {
  return outboundRequest(req.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'user-agent': req.userAgent,
      ...req.headers,
      [SIGNATURE_HEADER]: signWebhook(req.secret, req.timestamp, req.body),
      [EVENT_HEADER]: req.event,
    },
    body: req.body,
    redirect: 'manual',
    allowPrivate: req.allowPrivate,
    timeoutMs: req.timeoutMs,
    maxBytes: req.maxBytes,
    ...(req.signal ? { signal: req.signal } : {}),
    ...(req.readBody ? { readBody: req.readBody } : {}),
    ...(req.resolver ? { resolver: req.resolver } : {}),
    secrets: [req.secret],
  });
}
