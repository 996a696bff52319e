/**
 * Redaction of what leaves an outbound request as text (error messages, failure reasons, log
 * fields): known secrets (API keys, shared secrets), `Bearer` tokens (an echoed
 * Authorization header), credentials and query strings in URLs. One place for every outbound
 * path (webhooks, callbacks, LLM providers, http_fetch). Header values never enter a message.
 */

export const REDACTED = '[redacted]';

/** Replaces every occurrence of each known secret (keys, shared secrets) in `text`. */
export function redactSecrets(text: string, secrets: ReadonlyArray<string | null | undefined>): string {
  let out = text;
  for (const secret of secrets) if (secret) out = out.split(secret).join(REDACTED);
  return out;
}

/**
 * A URL fit for a log or an error: no credentials, every query value and the fragment replaced
 * (query strings carry tokens), the path kept. Text that is not a URL is returned as `(invalid url)`.
 */
export function redactUrl(input: string | URL): string {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    return '(invalid url)';
  }
  const credentials = url.username !== '' || url.password !== '' ? `${REDACTED}@` : '';
  const keys = [...new Set(url.searchParams.keys())];
  const query = keys.map((k) => `${encodeURIComponent(k)}=${REDACTED}`).join('&');
  return `${url.protocol}//${credentials}${url.host}${url.pathname}${query ? `?${query}` : ''}${url.hash ? `#${REDACTED}` : ''}`;
}

const URL_IN_TEXT = /\bhttps?:\/\/[^\s"'<>]+/gi;
/** `Bearer <token>` (an echoed Authorization header); short words after "bearer" in prose are left alone. */
const BEARER = /\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/gi;

/**
 * Redacts a free text that may quote a request (an error message, a provider's answer): known
 * secrets, `Bearer …` tokens, and URLs (credentials and query values).
 */
export function redactText(text: string, secrets: ReadonlyArray<string | null | undefined> = []): string {
  return redactSecrets(text, secrets)
    .replace(BEARER, `Bearer ${REDACTED}`)
    .replace(URL_IN_TEXT, (url) => redactUrl(url));
}

/** A short, redacted description of an error (its message, and its code when it has one). */
export function describeError(err: unknown, secrets: ReadonlyArray<string | null | undefined> = []): string {
  if (!(err instanceof Error)) return redactText(String(err), secrets);
  const code = (err as { code?: unknown }).code;
  const message = err.message || (err instanceof AggregateError ? (err.errors[0] as Error | undefined)?.message : '') || err.name;
  const text = typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
  return redactText(text, secrets);
}
