import { readFileSync } from 'node:fs';
import { compileErrors, validate } from '@readme/openapi-parser';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { errorCodes, type ErrorCode } from '../src/errors.js';
import { buildDocumentApp, openapiText } from '../src/http/openapi-document.js';
import { documentedRoutes, type DocumentedRoute } from '../src/http/openapi.js';
import { buildTestApp, wallet, type TestApp } from './helpers/app.js';

const ADMIN_KEY = 'test-admin-key-0123456789';

let t: TestApp;
let docApp: { app: FastifyInstance; close: () => Promise<void> };
let generated: string;
beforeAll(async () => {
  t = await buildTestApp({ ADMIN_API_KEY: ADMIN_KEY });
  docApp = await buildDocumentApp();
  generated = openapiText(docApp.app);
});
afterAll(async () => {
  await t.close();
  await docApp.close();
});

type Json = Record<string, any>;
const METHODS = ['get', 'put', 'post', 'delete', 'patch'];

/** `/v1/tasks/:id` as OpenAPI writes it. */
const openapiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}');

function resolve(doc: Json, schema: Json | undefined): Json | undefined {
  const ref = schema?.$ref as string | undefined;
  return ref ? doc.components.schemas[ref.replace('#/components/schemas/', '')] : schema;
}

/** Every example a media object shows: its own `example`/`examples`, and its schema component's `examples`. */
function mediaExamples(doc: Json, media: Json | undefined): { name: string; value: unknown }[] {
  if (!media) return [];
  const own = media.examples ? Object.entries(media.examples as Record<string, { value: unknown }>).map(([name, e]) => ({ name, value: e.value })) : [];
  if ('example' in media) own.push({ name: 'example', value: media.example });
  const schema = resolve(doc, media.schema);
  const fromSchema = ((schema?.examples ?? []) as unknown[]).map((value, i) => ({ name: `schema example ${i + 1}`, value }));
  return [...own, ...fromSchema];
}

/** The zod schema of a route's response for `status` (plain, or inside `content`). */
function responseZod(route: DocumentedRoute, status: string): z.ZodType | undefined {
  const entry = (route.schema.response as Record<string, unknown> | undefined)?.[status] as any;
  if (!entry) return undefined;
  if (entry instanceof z.ZodType) return entry;
  const first = Object.values(entry.content ?? {})[0] as { schema?: unknown } | undefined;
  return first?.schema instanceof z.ZodType ? first.schema : undefined;
}

function operationOf(doc: Json, route: DocumentedRoute): Json {
  const op = doc.paths[openapiPath(route.url)]?.[route.method.toLowerCase()];
  expect(op, `${route.method} ${route.url} is in the document`).toBeDefined();
  return op;
}

function problems(schema: z.ZodType, value: unknown): string {
  const r = schema.safeParse(value);
  return r.success ? '' : JSON.stringify(r.error.issues);
}

type Operation = { operationId?: string; tags?: string[]; description?: string; summary?: string; responses: Record<string, unknown> };

describe('OpenAPI document', () => {
  it('matches the committed openapi/openapi.json (run `npm run openapi` after changing a route)', () => {
    const committed = readFileSync('openapi/openapi.json', 'utf8');
    expect(generated).toBe(committed);
  });

  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await validate(JSON.parse(generated));
    if (!result.valid) throw new Error(compileErrors(result));
    expect(result.valid).toBe(true);
    expect(JSON.parse(generated).openapi).toBe('3.1.0');
  });

  it('lists the contract paths this service implements, each fully described', () => {
    const doc = JSON.parse(generated) as {
      paths: Record<string, Record<string, Operation>>;
      components: { schemas: Record<string, { examples?: unknown[] }> };
    };
    const expected = [
      'get /v1/agents',
      'get /v1/agents/{id}',
      'post /v1/agents/{id}/rate',
      'post /v1/tasks',
      'get /v1/tasks/{id}/status',
      'get /v1/tasks/{id}/result',
      'post /v1/tasks/{id}/cancel',
      'post /v1/tasks/{id}/dispute',
    ];
    const present = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    for (const op of expected) expect(present).toContain(op);
    const ids = new Set<string>();
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        expect(op.operationId, `${m} ${p}`).toBeTruthy();
        expect(ids.has(op.operationId!), `duplicate operationId ${op.operationId}`).toBe(false);
        ids.add(op.operationId!);
        expect(op.tags?.length, `${m} ${p} tags`).toBeGreaterThan(0);
        expect(op.summary, `${m} ${p} summary`).toBeTruthy();
        const success = Object.entries(op.responses).find(([s]) => s.startsWith('2'))?.[1];
        const ref = JSON.stringify(success).match(/#\/components\/schemas\/(\w+)/)?.[1];
        expect(ref && doc.components.schemas[ref]?.examples?.length, `${m} ${p} response example`).toBeTruthy();
        if (!p.endsWith('z')) {
          expect(op.description, `${m} ${p} description`).toBeTruthy();
          for (const status of ['400', '429', '500']) {
            expect(JSON.stringify(op.responses[status]), `${m} ${p} ${status}`).toContain('#/components/schemas/Error');
          }
        }
      }
    }
  });

  it('validates every request example against its route’s zod schema, and the route accepts it', async () => {
    const doc = JSON.parse(generated) as Json;
    let checked = 0;
    for (const route of documentedRoutes(docApp.app)) {
      const body = route.schema.body as z.ZodType | undefined;
      if (!body) continue;
      const op = operationOf(doc, route);
      const examples = mediaExamples(doc, op.requestBody?.content?.['application/json']);
      expect(examples.length, `${route.method} ${route.url}: a request body example`).toBeGreaterThan(0);
      for (const ex of examples) {
        expect(problems(body, ex.value), `${route.method} ${route.url} request ${ex.name}`).toBe('');
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10);
  });

  it('sends every request body example to its route: none is refused as malformed', async () => {
    // x402 off in the test app: a wallet signature reaches the handler, where the deeper checks live (e.g. a runtime's kind and secret).
    const doc = t.app.swagger() as Json;
    const owner = wallet(0);
    for (const route of documentedRoutes(t.app)) {
      if (!route.schema.body) continue;
      const op = operationOf(doc, route);
      const params = Object.fromEntries(
        ((op.parameters ?? []) as Json[]).filter((p) => p.in === 'path').map((p) => [p.name, String(p.schema?.examples?.[0] ?? p.example ?? '')]),
      );
      const url = route.url.replace(/:(\w+)/g, (_, name: string) => params[name] || (name === 'id' && route.url.includes('disputes') ? 'dispute_2j4k6l8z0x1c3v5b7n9m' : 'x'));
      for (const ex of mediaExamples(doc, op.requestBody?.content?.['application/json'])) {
        const res = await t.app.inject({
          method: route.method as 'POST',
          url,
          headers: { ...(await t.auth(owner)), 'x-admin-key': ADMIN_KEY },
          payload: ex.value as object,
        });
        expect(res.statusCode, `${route.method} ${url} ${ex.name}: ${res.body}`).not.toBe(400);
        if (route.url === '/v1/agents') expect(res.statusCode, res.body).toBe(201);
      }
    }
  });

  it('validates every response example against its route’s response schema', () => {
    const doc = JSON.parse(generated) as Json;
    let checked = 0;
    for (const route of documentedRoutes(docApp.app)) {
      const op = operationOf(doc, route);
      for (const [status, response] of Object.entries(op.responses as Record<string, Json>)) {
        const schema = responseZod(route, status);
        expect(schema, `${route.method} ${route.url} ${status}: a zod schema`).toBeDefined();
        for (const [, media] of Object.entries((response.content ?? {}) as Record<string, Json>)) {
          for (const ex of mediaExamples(doc, media)) {
            expect(problems(schema!, ex.value), `${route.method} ${route.url} ${status} ${ex.name}`).toBe('');
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(50);
  });

  it('shows each error status of each operation with codes that status carries', () => {
    const doc = JSON.parse(generated) as Json;
    const shown = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const [status, response] of Object.entries(op.responses as Record<string, Json>)) {
          if (Number(status) < 400) continue;
          const named = response.content?.['application/json']?.examples as Record<string, { value: any }> | undefined;
          expect(named && Object.keys(named).length, `${method} ${path} ${status}: error examples`).toBeTruthy();
          for (const [name, { value }] of Object.entries(named!)) {
            const spec = errorCodes[value.error.code as ErrorCode];
            expect(spec, `${method} ${path} ${status} ${name}: a known code`).toBeDefined();
            expect(spec.status, `${method} ${path} ${status}: ${value.error.code} is a ${spec.status}`).toBe(Number(status));
            expect(value.error.type).toBe(spec.type);
            expect(value.error.retryable).toBe(spec.retryable);
            expect(name).toBe(value.error.code);
            shown.add(value.error.code);
          }
        }
      }
    }
    for (const code of ['not_ready', 'work_in_progress', 'task_not_found', 'agent_not_found', 'payment_required', 'result_hash_mismatch', 'forbidden']) {
      expect(shown, code).toContain(code);
    }
  });

  it('describes each shape once: no unused component, no input twin identical to its output', () => {
    const doc = JSON.parse(generated) as Json;
    const schemas = doc.components.schemas as Record<string, unknown>;
    const text = JSON.stringify(doc);
    for (const name of Object.keys(schemas)) {
      expect(text.includes(`"#/components/schemas/${name}"`), `${name} is referenced`).toBe(true);
      if (name.endsWith('Input')) {
        const base = name.slice(0, -'Input'.length);
        expect(schemas[base], `${name} has its output twin`).toBeDefined();
        const { description: _a, ...input } = schemas[name] as Json;
        const { description: _b, ...output } = schemas[base] as Json;
        expect(JSON.stringify(input), `${name} differs from ${base}`).not.toBe(JSON.stringify(output));
      }
    }
  });

  it('advertises on priced routes only what they take: x402 (a wallet signature when x402 is off)', () => {
    const on = JSON.parse(generated) as Json;
    const off = t.app.swagger() as Json;
    let priced = 0;
    for (const route of documentedRoutes(docApp.app)) {
      const security = JSON.stringify(operationOf(on, route).security ?? []);
      if (route.config.price) {
        priced++;
        expect(security, `${route.method} ${route.url}`).toBe(JSON.stringify([{ x402: [] }]));
        expect(operationOf(on, route).responses['401'], `${route.method} ${route.url}: no signature is read, no 401`).toBeUndefined();
        expect(JSON.stringify(operationOf(off, route).security), `${route.method} ${route.url} (x402 off)`).toBe(
          JSON.stringify([{ siwe: [] }, { bearerAuth: [] }]),
        );
      } else {
        expect(security, `${route.method} ${route.url}`).not.toContain('x402');
      }
    }
    expect(priced).toBeGreaterThan(10);
  });

  it('pre-fills no query parameter with an example', () => {
    const doc = JSON.parse(generated) as Json;
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const p of (op.parameters ?? []) as Json[]) {
          if (p.in !== 'query') continue;
          expect(p.example ?? p.examples ?? p.schema?.example ?? p.schema?.examples, `${method} ${path} ?${p.name}`).toBeUndefined();
        }
      }
    }
  });

  it('documents the operator-only admin routes, and shows no empty tag', async () => {
    const doc = JSON.parse(generated) as Json;
    const admin = Object.entries(doc.paths as Record<string, Record<string, Json>>).filter(([p]) => p.startsWith('/v1/admin/'));
    expect(admin.length).toBeGreaterThanOrEqual(3);
    for (const [, ops] of admin) for (const op of Object.values(ops)) expect(op.security).toEqual([{ adminKey: [] }]);
    const used = (d: Json) => new Set(Object.values(d.paths as Record<string, Record<string, Json>>).flatMap((ops) => Object.values(ops).flatMap((op) => op.tags ?? [])));
    for (const d of [doc, t.app.swagger() as Json]) {
      const tags = (d.tags as { name: string }[]).map((x) => x.name);
      expect(tags.filter((tag) => !used(d).has(tag))).toEqual([]);
    }
    const without = await buildTestApp();
    try {
      const d = without.app.swagger() as Json;
      expect((d.tags as { name: string }[]).map((x) => x.name)).not.toContain('admin');
      expect(Object.keys(d.paths).filter((p) => p.startsWith('/v1/admin/'))).toEqual([]);
    } finally {
      await without.close();
    }
  });

  it('states the result hash rule where results are delivered, claimed and read', () => {
    const doc = JSON.parse(generated) as Json;
    for (const [path, method] of [
      ['/v1/tasks/{id}/deliver', 'post'],
      ['/v1/tasks/{id}/claim', 'post'],
      ['/v1/tasks/{id}/result', 'get'],
    ] as const) {
      expect(doc.paths[path][method].description, `${method} ${path}`).toMatch(/SHA-256 \(hex\) of the canonical JSON/);
      expect(doc.paths[path][method].description, `${method} ${path}`).toMatch(/keys sorted at every/);
    }
  });

  it('is served at /openapi.json and Swagger UI at /docs', async () => {
    const doc = await t.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(doc.statusCode).toBe(200);
    expect(doc.json().paths['/v1/tasks']).toBeDefined();
    const ui = await t.app.inject({ method: 'GET', url: '/docs/' });
    expect(ui.statusCode).toBe(200);
    expect(ui.body).toContain('swagger');
  });
});
