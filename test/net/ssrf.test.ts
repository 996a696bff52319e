import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executeHttpFetch, HttpFetchError, type HttpFetchPolicy } from '../../src/dispatcher/tools/http-fetch.js';
import { assertPublicUrl, isPublicAddress, UnsafeUrlError } from '../../src/net/ssrf.js';

/** Only 127.0.0.1 is ever contacted: public addresses are classified, never connected to. */

describe('isPublicAddress', () => {
  it('refuses every non-public IPv4 range', () => {
    const refused = [
      '0.0.0.0',
      '0.255.255.255',
      '10.0.0.1',
      '10.255.255.255',
      '100.64.0.1',
      '100.127.255.254',
      '127.0.0.1',
      '127.255.255.254',
      '169.254.0.1',
      '169.254.169.254',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.0.1',
      '192.168.255.255',
      '192.0.2.10',
      '198.18.0.1',
      '198.51.100.7',
      '203.0.113.9',
      '224.0.0.1',
      '239.255.255.250',
      '240.0.0.1',
      '255.255.255.255',
    ];
    for (const ip of refused) expect(isPublicAddress(ip), ip).toBe(false);
  });

  it('accepts public IPv4, including the neighbours of private ranges', () => {
    const allowed = ['93.184.216.34', '8.8.8.8', '1.1.1.1', '9.255.255.255', '11.0.0.0', '100.63.255.255', '100.128.0.0', '172.15.255.255', '172.32.0.0', '169.253.255.255', '192.167.255.255', '223.255.255.255'];
    for (const ip of allowed) expect(isPublicAddress(ip), ip).toBe(true);
  });

  it('refuses non-public IPv6: loopback, unspecified, ULA, link-local, multicast, documentation', () => {
    const refused = ['::1', '::', 'fc00::1', 'fd12:3456:789a::1', 'fe80::1', 'fe80::1%eth0', 'febf::1', 'ff02::1', 'fec0::1', '2001:db8::1', '2001:0:4136:e378::1', '[::1]', '::0.0.0.1'];
    for (const ip of refused) expect(isPublicAddress(ip), ip).toBe(false);
  });

  it('judges IPv4-mapped, NAT64 and 6to4 IPv6 by the IPv4 address inside', () => {
    for (const ip of ['::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', '::ffff:169.254.169.254', '::ffff:192.168.1.1', '64:ff9b::10.0.0.1', '2002:7f00:1::1', '2002:a9fe:a9fe::']) {
      expect(isPublicAddress(ip), ip).toBe(false);
    }
    for (const ip of ['::ffff:93.184.216.34', '::ffff:5db8:d822', '64:ff9b::8.8.8.8', '2002:5db8:d822::1']) {
      expect(isPublicAddress(ip), ip).toBe(true);
    }
  });

  it('accepts global unicast IPv6 and refuses what is not an IP', () => {
    expect(isPublicAddress('2606:2800:220:1:248:1893:25c8:1946')).toBe(true);
    expect(isPublicAddress('2a00:1450:4001:80b::200e')).toBe(true);
    for (const junk of ['', 'localhost', 'example.com', '256.1.1.1', '1.2.3', '::g']) expect(isPublicAddress(junk), junk).toBe(false);
  });
});

describe('assertPublicUrl', () => {
  const strict = { allowPrivate: false };

  async function refusal(url: string, opts: Parameters<typeof assertPublicUrl>[1] = strict): Promise<UnsafeUrlError> {
    const err = await assertPublicUrl(url, opts).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, url).toBeInstanceOf(UnsafeUrlError);
    return err as UnsafeUrlError;
  }

  it('refuses loopback, localhost, the metadata endpoint and disguised loopback literals', async () => {
    for (const url of ['http://127.0.0.1', 'http://127.0.0.1:8080/x', 'http://localhost', 'http://localhost:3000/', 'http://169.254.169.254/', 'http://169.254.169.254/latest/meta-data/', 'http://[::1]/', 'http://[::ffff:127.0.0.1]/', 'http://2130706433/', 'http://0x7f.1/', 'http://0/', 'http://10.1.2.3/']) {
      expect((await refusal(url)).reason, url).toBe('private_address');
    }
  });

  it('refuses other schemes, credentials and garbage even with allowPrivate', async () => {
    for (const opts of [strict, { allowPrivate: true }]) {
      expect((await refusal('file:///etc/passwd', opts)).reason).toBe('scheme');
      expect((await refusal('ftp://ftp.example.com/file', opts)).reason).toBe('scheme');
      expect((await refusal('gopher://127.0.0.1:6379/_INFO', opts)).reason).toBe('scheme');
      expect((await refusal('http://user:pass@93.184.216.34/', opts)).reason).toBe('credentials');
      expect((await refusal('not a url', opts)).reason).toBe('invalid_url');
    }
  });

  it('allows a public IP literal without any lookup or connection', async () => {
    const lookup = (): Promise<never> => Promise.reject(new Error('must not resolve a literal'));
    const url = await assertPublicUrl('http://93.184.216.34/', { allowPrivate: false, lookup });
    expect(url.hostname).toBe('93.184.216.34');
    expect((await assertPublicUrl('https://[2606:2800:220:1:248:1893:25c8:1946]/a', { allowPrivate: false, lookup })).pathname).toBe('/a');
  });

  it('refuses a name when any of its addresses is private, and an unresolvable name', async () => {
    const mixed = async () => [
      { address: '93.184.216.34', family: 4 },
      { address: '10.0.0.7', family: 4 },
    ];
    expect((await refusal('https://rebind.example/', { allowPrivate: false, lookup: mixed })).reason).toBe('private_address');
    const none = async () => [];
    expect((await refusal('https://nothing.example/', { allowPrivate: false, lookup: none })).reason).toBe('unresolvable');
    const failing = async (): Promise<never> => {
      throw new Error('ENOTFOUND');
    };
    expect((await refusal('https://nxdomain.example/', { allowPrivate: false, lookup: failing })).reason).toBe('unresolvable');
    const publicOnly = async () => [{ address: '93.184.216.34', family: 4 }];
    expect((await assertPublicUrl('https://example.test/x', { allowPrivate: false, lookup: publicOnly })).host).toBe('example.test');
  });

  it('lets loopback through with allowPrivate (dev and tests)', async () => {
    expect((await assertPublicUrl('http://127.0.0.1:9/', { allowPrivate: true })).port).toBe('9');
  });
});

describe('executeHttpFetch', () => {
  let server: http.Server;
  let base: string;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const url = req.url ?? '/';
      if (url === '/a') return void res.writeHead(302, { location: '/b' }).end();
      if (url === '/b') return void res.writeHead(301, { location: `${base}/c` }).end();
      if (url === '/c') return void res.writeHead(307, { location: '/final' }).end();
      if (url === '/final') return void res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(`the end (${req.method})`);
      if (url.startsWith('/loop')) return void res.writeHead(302, { location: `/loop${url.length}` }).end();
      if (url === '/to-file') return void res.writeHead(302, { location: 'file:///etc/passwd' }).end();
      if (url === '/see-other') return void res.writeHead(303, { location: '/echo' }).end();
      if (url === '/echo') {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ method: req.method, body, headers: req.headers })));
        return;
      }
      if (url === '/image') return void res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.alloc(2048, 1));
      if (url === '/endless') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        const chunk = 'x'.repeat(16 * 1024);
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        res.on('close', () => res.removeAllListeners('drain'));
        return pump();
      }
      if (url === '/slow') return void setTimeout(() => res.writeHead(200).end('late'), 2_000).unref();
      res.writeHead(404).end('not found');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const open: HttpFetchPolicy = { allowPrivate: true, timeoutMs: 5_000, maxBytes: 256 * 1024 };
  const signal = (): AbortSignal => new AbortController().signal;

  it('refuses a loopback URL when private targets are not allowed', async () => {
    const err = await executeHttpFetch({ url: `${base}/final` }, { ...open, allowPrivate: false }, signal()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafeUrlError);
    expect((err as UnsafeUrlError).reason).toBe('private_address');
  });

  it('follows a redirect chain (302 → 301 → 307) and reports where it ended', async () => {
    const result = await executeHttpFetch({ url: `${base}/a` }, open, signal());
    expect(result).toMatchObject({ status: 200, url: `${base}/final`, body: 'the end (GET)', truncated: false, redirects: 3 });
    expect(result.content_type).toContain('text/plain');
  });

  it('gives up after 3 redirects, and re-checks every hop (no redirect to file://)', async () => {
    await expect(executeHttpFetch({ url: `${base}/loop` }, open, signal())).rejects.toThrow(/too many redirects/);
    const err = await executeHttpFetch({ url: `${base}/to-file` }, open, signal()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafeUrlError);
    expect((err as UnsafeUrlError).reason).toBe('scheme');
  });

  it('turns a POST into a GET on 303 and drops the body', async () => {
    const result = await executeHttpFetch({ url: `${base}/see-other`, method: 'POST', body: 'payload' }, open, signal());
    expect(JSON.parse(result.body)).toMatchObject({ method: 'GET', body: '' });
  });

  it('sends POST bodies and the caller’s headers, but not framing headers', async () => {
    const result = await executeHttpFetch(
      { url: `${base}/echo`, method: 'POST', body: '{"q":1}', headers: { 'Content-Type': 'application/json', Host: 'evil.internal', 'X-Trace': 't1' } },
      open,
      signal(),
    );
    const echoed = JSON.parse(result.body) as { method: string; body: string; headers: Record<string, string> };
    expect(echoed).toMatchObject({ method: 'POST', body: '{"q":1}' });
    expect(echoed.headers['x-trace']).toBe('t1');
    expect(echoed.headers.host).toBe(new URL(base).host);
    expect(echoed.headers['accept-encoding']).toBe('identity');
  });

  it('stops reading at the size limit of an endless response and notes the truncation', async () => {
    const result = await executeHttpFetch({ url: `${base}/endless` }, { ...open, maxBytes: 1000 }, signal());
    expect(result.truncated).toBe(true);
    expect(result.body.startsWith('x'.repeat(1000))).toBe(true);
    expect(result.body).not.toContain('x'.repeat(1001));
    expect(result.body).toMatch(/\[truncated: the response is longer than 1000 bytes\]$/);
  });

  it('does not return binary content', async () => {
    const result = await executeHttpFetch({ url: `${base}/image` }, open, signal());
    expect(result).toMatchObject({ status: 200, truncated: false });
    expect(result.body).toMatch(/image\/png is not text/);
  });

  it('times out, follows the caller’s abort, and rejects bad arguments', async () => {
    await expect(executeHttpFetch({ url: `${base}/slow` }, { ...open, timeoutMs: 150 }, signal())).rejects.toThrow(/timed out/);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('task cancelled')), 100);
    await expect(executeHttpFetch({ url: `${base}/slow` }, open, controller.signal)).rejects.toThrow('task cancelled');
    await expect(executeHttpFetch({ url: 42 }, open, signal())).rejects.toBeInstanceOf(HttpFetchError);
    await expect(executeHttpFetch({ url: `${base}/echo`, body: 'x' }, open, signal())).rejects.toThrow(/needs method POST/);
  });
});
