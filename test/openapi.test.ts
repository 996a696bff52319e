import { readFileSync } from 'node:fs';
import { compileErrors, validate } from '@readme/openapi-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateOpenapi } from '../src/http/openapi-document.js';
import { buildTestApp, type TestApp } from './helpers/app.js';

let t: TestApp;
let generated: string;
beforeAll(async () => {
  t = await buildTestApp();
  generated = await generateOpenapi();
});
afterAll(() => t.close());

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

  it('is served at /openapi.json and Swagger UI at /docs', async () => {
    const doc = await t.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(doc.statusCode).toBe(200);
    expect(doc.json().paths['/v1/tasks']).toBeDefined();
    const ui = await t.app.inject({ method: 'GET', url: '/docs/' });
    expect(ui.statusCode).toBe(200);
    expect(ui.body).toContain('swagger');
  });
});
