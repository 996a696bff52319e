/**
 * Where the scripts reach the service: `TASK_ESCROW_URL`, else `BASE_URL`, else
 * `http://127.0.0.1:$PORT` (PORT as `npm start` reads it, default 3000). A trailing slash is dropped.
 */
export function serviceBaseUrl(env: Record<string, string | undefined> = process.env): string {
  const pick = (name: string) => {
    const v = env[name]?.trim();
    return v ? v : undefined;
  };
  const raw = pick('TASK_ESCROW_URL') ?? pick('BASE_URL') ?? `http://127.0.0.1:${pick('PORT') ?? '3000'}`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`Not a URL: ${raw} (set TASK_ESCROW_URL or BASE_URL to the service's origin, e.g. http://127.0.0.1:3000)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`The service URL must be http(s): ${raw}`);
  return url.toString().replace(/\/+$/, '');
}

/** The SIWE domain to sign for: `AUTH_DOMAIN` when the service sets one, else the URL's host[:port]. */
export function signInDomain(baseUrl: string, env: Record<string, string | undefined> = process.env): string {
  return env.AUTH_DOMAIN?.trim() || new URL(baseUrl).host;
}
