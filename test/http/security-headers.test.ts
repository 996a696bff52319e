/**
 * The security headers (http/protection.ts): helmet's, computed once for the service's options and
 * set on every response: an API answer, an error, the docs page (whose Swagger UI needs the
 * content security policy's inline allowances).
 */
import helmet from 'helmet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { securityHeaders } from '../../src/http/protection.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';

/** What @fastify/helmet 13.2 set with these options (every response, before this module computed them once). */
const HELMET_HEADERS: Record<string, string> = {
  "content-security-policy": "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data: validator.swagger.io;object-src 'none';script-src 'self' 'unsafe-inline';script-src-attr 'none';style-src 'self' 'unsafe-inline';upgrade-insecure-requests",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "origin-agent-cluster": "?1",
  "referrer-policy": "no-referrer",
  "strict-transport-security": "max-age=31536000; includeSubDomains",
  "x-content-type-options": "nosniff",
  "x-dns-prefetch-control": "off",
  "x-download-options": "noopen",
  "x-frame-options": "SAMEORIGIN",
  "x-permitted-cross-domain-policies": "none",
  "x-xss-protection": "0",
};

let t: TestApp;

beforeAll(async () => {
  t = await buildTestApp();
}, 60_000);
afterAll(() => t?.close());

describe('security headers', () => {
  it('sets helmet’s headers on every response, the docs page’s policy included', async () => {
    for (const url of ['/healthz', '/v1/tasks/task_00000000000000000000/status', '/docs/']) {
      const res = await t.app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBeLessThan(500);
      for (const [name, value] of Object.entries(HELMET_HEADERS)) expect(res.headers[name], `${url} ${name}`).toBe(value);
      expect(res.headers['x-content-type-options'], url).toBe('nosniff');
      expect(res.headers['x-frame-options'], url).toBe('SAMEORIGIN');
      expect(res.headers['strict-transport-security'], url).toMatch(/^max-age=\d+; includeSubDomains$/);
      expect(res.headers['cross-origin-opener-policy'], url).toBe('same-origin');
      expect(res.headers['referrer-policy'], url).toBe('no-referrer');
      const csp = String(res.headers['content-security-policy']);
      expect(csp, url).toContain("default-src 'self'");
      expect(csp, url).toContain("script-src 'self' 'unsafe-inline'");
      expect(csp, url).toContain("img-src 'self' data: validator.swagger.io");
      expect(res.headers['x-powered-by'], url).toBeUndefined();
    }
  });

  it('computes what helmet’s own middleware sets on a real response', async () => {
    const options = { contentSecurityPolicy: { directives: { defaultSrc: ["'self'"], imgSrc: ["'self'", 'data:'] } } };
    const set: Record<string, string> = {};
    const res = { setHeader: (k: string, v: unknown) => void (set[k.toLowerCase()] = String(v)), removeHeader: (k: string) => void delete set[k.toLowerCase()] };
    await new Promise<void>((resolve, reject) => helmet(options)({} as never, res as never, (err?: unknown) => (err ? reject(err) : resolve())));
    expect(securityHeaders(options)).toEqual(set);
    expect(Object.keys(set).length).toBeGreaterThan(8);
  });
});
