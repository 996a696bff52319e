import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bodyText, isRetryableStatus, OutboundError, outboundRequest, type OutboundRequest } from '../../src/net/outbound.js';
import { describeError, redactText, redactUrl } from '../../src/net/redact.js';
import { pinnedLookup, UnsafeUrlError, type ResolvedAddress } from '../../src/net/ssrf.js';
import { closeServer, readBody } from '../helpers/http.js';

/** The one outbound client, against a real server on 127.0.0.1 reached through scripted names. */

let server: Server;
let port: number;
const seen: Array<{ host: string | undefined; url: string | undefined; headers: IncomingHttpHeaders; method: string | undefined; body: string }> = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    void readBody(req).then((body) => {
      seen.push({ host: req.headers.host, url: req.url, headers: req.headers, method: req.method, body });
      const url = req.url ?? '/';
      if (url === '/hop') return void res.writeHead(302, { location: `http://second.test:${port}/final` }).end();
      if (url === '/same-origin-hop') return void res.writeHead(307, { location: '/final' }).end();
      if (url === '/final') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('final');
      if (url === '/exact') return void res.writeHead(200).end('x'.repeat(100));
      if (url === '/big') return void res.writeHead(200).end('y'.repeat(101));
      if (url === '/slow') return void setTimeout(() => res.writeHead(200).end('late'), 2_000).unref();
      res.writeHead(404).end('not found');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => closeServer(server));
afterEach(() => {
  seen.length = 0;
});

function scripted(): { asked: string[]; resolver: (host: string) => Promise<ResolvedAddress[]> } {
  const asked: string[] = [];
  return { asked, resolver: async (host) => (asked.push(host), [{ address: '127.0.0.1', family: 4 }]) };
}

const base = (over: Partial<OutboundRequest> = {}): OutboundRequest => ({ allowPrivate: true, timeoutMs: 2_000, maxBytes: 100, ...over });

describe('outboundRequest', () => {
  it('resolves each hop once, through the resolver, and connects to what it answered', async () => {
    const dns = scripted();
    const res = await outboundRequest(`http://first.test:${port}/hop`, base({ redirect: 'follow', resolver: dns.resolver }));
    expect(res).toMatchObject({ status: 200, redirects: 1 });
    expect(res.url.toString()).toBe(`http://second.test:${port}/final`);
    expect(bodyText(res)).toBe('final');
    expect(dns.asked).toEqual(['first.test', 'second.test']);
    expect(seen.map((s) => s.host)).toEqual([`first.test:${port}`, `second.test:${port}`]);
  });

  it('refuses a name that resolves to a private address before connecting, unless private addresses are allowed', async () => {
    const err = await outboundRequest('http://first.test/hop', base({ allowPrivate: false, resolver: async () => [{ address: '10.0.0.8', family: 4 }] })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafeUrlError);
    expect((err as UnsafeUrlError).reason).toBe('private_address');
    expect(seen).toHaveLength(0);
  });

  it('returns a redirect as it is by default, and follows no more than maxRedirects', async () => {
    const dns = scripted();
    const manual = await outboundRequest(`http://first.test:${port}/hop`, base({ resolver: dns.resolver }));
    expect(manual.status).toBe(302);
    expect(seen).toHaveLength(1);
    const err = await outboundRequest(`http://first.test:${port}/hop`, base({ redirect: 'follow', maxRedirects: 0, resolver: dns.resolver })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutboundError);
    expect((err as OutboundError).kind).toBe('too_many_redirects');
  });

  it('drops credentials when a redirect leaves the origin, keeps them within it', async () => {
    const dns = scripted();
    const headers = { authorization: 'Bearer sk-secret', cookie: 'session=1', 'x-trace': 't' };
    await outboundRequest(`http://first.test:${port}/hop`, base({ redirect: 'follow', headers, resolver: dns.resolver }));
    expect(seen[0]?.headers.authorization).toBe('Bearer sk-secret');
    expect(seen[1]?.headers.authorization).toBeUndefined();
    expect(seen[1]?.headers.cookie).toBeUndefined();
    expect(seen[1]?.headers['x-trace']).toBe('t');

    seen.length = 0;
    await outboundRequest(`http://first.test:${port}/same-origin-hop`, base({ redirect: 'follow', headers, method: 'POST', body: '{}', resolver: dns.resolver }));
    expect(seen.map((s) => [s.url, s.method, s.headers.authorization, s.body])).toEqual([
      ['/same-origin-hop', 'POST', 'Bearer sk-secret', '{}'],
      ['/final', 'POST', 'Bearer sk-secret', '{}'], // 307 keeps the method and the body
    ]);
  });

  it('caps the body: exactly maxBytes is read whole, one byte more is an error or cut off', async () => {
    const exact = await outboundRequest(`http://127.0.0.1:${port}/exact`, base());
    expect(exact).toMatchObject({ truncated: false });
    expect(exact.body?.length).toBe(100);

    const err = await outboundRequest(`http://127.0.0.1:${port}/big`, base()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutboundError);
    expect(err).toMatchObject({ kind: 'too_large', message: 'response body exceeds 100 bytes' });

    const cut = await outboundRequest(`http://127.0.0.1:${port}/big`, base({ oversize: 'truncate' }));
    expect(cut).toMatchObject({ truncated: true });
    expect(bodyText(cut)).toBe('y'.repeat(100));

    const unread = await outboundRequest(`http://127.0.0.1:${port}/big`, base({ readBody: () => false }));
    expect(unread).toMatchObject({ status: 200, body: null });
  });

  it('caps the time, and tells a timeout from the caller’s abort', async () => {
    const started = Date.now();
    await expect(outboundRequest(`http://127.0.0.1:${port}/slow`, base({ timeoutMs: 150 }))).rejects.toMatchObject({ kind: 'timeout' });
    expect(Date.now() - started).toBeLessThan(1_500);

    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('task cancelled')), 100);
    await expect(outboundRequest(`http://127.0.0.1:${port}/slow`, base({ signal: controller.signal }))).rejects.toMatchObject({ kind: 'aborted' });
  });

  it('a name that does not resolve in time is a timeout, not a hang', async () => {
    const never = (): Promise<ResolvedAddress[]> => new Promise(() => {});
    await expect(outboundRequest('http://stuck.test/', base({ timeoutMs: 100, resolver: never }))).rejects.toMatchObject({ kind: 'timeout' });
  });

  it('refuses other schemes, credentials in the URL and garbage before any lookup', async () => {
    const dns = scripted();
    for (const [url, reason] of [
      ['file:///etc/passwd', 'scheme'],
      [`http://user:pw@first.test:${port}/final`, 'credentials'],
      ['not a url', 'invalid_url'],
    ] as const) {
      const err = await outboundRequest(url, base({ resolver: dns.resolver })).catch((e: unknown) => e);
      expect(err, url).toBeInstanceOf(UnsafeUrlError);
      expect((err as UnsafeUrlError).reason, url).toBe(reason);
    }
    expect(dns.asked).toEqual([]);
    expect(seen).toHaveLength(0);
  });

  it('keeps the caller’s secrets out of network error messages', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await closeServer(closed);
    const err = await outboundRequest(`http://127.0.0.1:${deadPort}/`, base({ headers: { authorization: 'Bearer sk-123' }, secrets: ['sk-123'] })).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'network' });
    expect((err as Error).message).toMatch(/ECONNREFUSED/);
    expect((err as Error).message).not.toContain('sk-123');
  });
});

describe('pinnedLookup', () => {
  const lookup = pinnedLookup('agent.test', [
    { address: '93.184.216.34', family: 4 },
    { address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 },
  ]);

  function ask(host: string, options: { all?: boolean; family?: number }): Promise<unknown[]> {
    return new Promise((resolve) => lookup(host, options as never, (...args: unknown[]) => resolve(args)));
  }

  it('answers only the checked addresses, for the checked name only', async () => {
    expect(await ask('agent.test', { all: true })).toEqual([null, [{ address: '93.184.216.34', family: 4 }, { address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 }]]);
    expect(await ask('agent.test', { family: 6 })).toEqual([null, '2606:2800:220:1:248:1893:25c8:1946', 6]);
    const [err] = await ask('other.test', {});
    expect(err).toBeInstanceOf(UnsafeUrlError);
  });
});

describe('redaction', () => {
  it('redacts URLs: credentials, query values and fragments', () => {
    expect(redactUrl('https://user:pw@hooks.example/cb?token=abc&id=7#frag')).toBe('https://[redacted]@hooks.example/cb?token=[redacted]&id=[redacted]#[redacted]');
    expect(redactUrl('https://hooks.example/cb')).toBe('https://hooks.example/cb');
    expect(redactUrl('nope')).toBe('(invalid url)');
  });

  it('redacts known secrets, bearer tokens and URLs inside a text', () => {
    const text = 'Incorrect API key sk-live-42; sent Authorization: Bearer eyJhbGciOi.abc-def_123 to https://api.example/v1?key=sk-live-42';
    const out = redactText(text, ['sk-live-42']);
    expect(out).not.toContain('sk-live-42');
    expect(out).not.toContain('eyJhbGciOi');
    expect(out).toContain('Bearer [redacted]');
    expect(out).toContain('https://api.example/v1?key=[redacted]');
    expect(redactText('the bearer token is invalid')).toBe('the bearer token is invalid');
  });

  it('describes errors with their code', () => {
    const err = Object.assign(new Error('getaddrinfo ENOTFOUND hooks.example'), { code: 'ENOTFOUND' });
    expect(describeError(err)).toBe('getaddrinfo ENOTFOUND hooks.example');
    expect(describeError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe('socket hang up (ECONNRESET)');
  });

  it('retries 408, 429 and 5xx only', () => {
    expect([408, 429, 500, 503, 599].every(isRetryableStatus)).toBe(true);
    expect([200, 202, 301, 400, 401, 404, 422].some(isRetryableStatus)).toBe(false);
  });
});
