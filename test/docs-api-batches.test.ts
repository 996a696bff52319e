import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
// The modules that register the documented schemas (by their OpenAPI component id) in zod's global registry.
import { DelegateTaskArgs } from '../src/batches/schemas.js';
import '../src/http/schemas.js';
import '../src/limits/schemas.js';
import '../src/payments/schemas.js';

/**
 * docs/API-batches.md: every ```json block is preceded by `<!-- example: … -->` naming what it is:
 * - `<Component>`: an OpenAPI component schema; the block must be one of its examples in
 *   openapi/openapi.json and parse with the zod schema registered under that id;
 * - `zod:DelegateTaskArgs`: the delegate_task tool's arguments, parsed with its zod schema
 *   (`zod:DelegateTaskArgs one-task`: one task's fields alone, which the tool takes as `{tasks: [it]}`);
 * - `error <METHOD> <path> <status> <name>`: a named error example of that response in the document,
 *   which parses with the `Error` component's zod schema.
 */

type Json = Record<string, any>;
const doc = JSON.parse(readFileSync(new URL('../openapi/openapi.json', import.meta.url), 'utf8')) as Json;
const markdown = readFileSync(new URL('../docs/API-batches.md', import.meta.url), 'utf8');

interface Block {
  marker: string | null;
  line: number;
  value: unknown;
}

function jsonBlocks(text: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```json') continue;
    const end = lines.findIndex((l, j) => j > i && l.trim() === '```');
    expect(end, `the json block at line ${i + 1} is closed`).toBeGreaterThan(i);
    const marker = /^<!-- example: (.+?) -->$/.exec(lines[i - 1]?.trim() ?? '')?.[1] ?? null;
    blocks.push({ marker, line: i + 1, value: JSON.parse(lines.slice(i + 1, end).join('\n')) });
    i = end;
  }
  return blocks;
}

const zodSchemas: Record<string, z.ZodType> = { DelegateTaskArgs };

function registered(id: string): z.ZodType {
  const schema = (z.globalRegistry as unknown as { _idmap: Map<string, z.ZodType> })._idmap.get(id);
  expect(schema, `a zod schema registered as ${id}`).toBeDefined();
  return schema!;
}

function expectParses(schema: z.ZodType, value: unknown, where: string): void {
  const r = schema.safeParse(value);
  expect(r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`), where).toEqual([]);
}

describe('docs/API-batches.md', () => {
  const blocks = jsonBlocks(markdown);

  it('has json examples, each tagged with what it validates against', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(10);
    expect(blocks.filter((b) => b.marker === null).map((b) => b.line)).toEqual([]);
  });

  it('shows only examples of the OpenAPI document, valid against their schemas', () => {
    const seen = new Set<string>();
    for (const b of blocks) {
      const where = `line ${b.line} (${b.marker})`;
      const marker = b.marker!;
      if (marker.startsWith('zod:')) {
        const [name, form] = marker.slice(4).split(' ');
        const schema = zodSchemas[name!];
        expect(schema, where).toBeDefined();
        expect([undefined, 'one-task'], where).toContain(form);
        expectParses(schema!, form === 'one-task' ? { tasks: [b.value] } : b.value, where);
      } else if (marker.startsWith('error ')) {
        const [, method, path, status, name] = /^error (\w+) (\S+) (\d{3}) (\w+)$/.exec(marker) ?? [];
        const example = doc.paths[path!]?.[method!.toLowerCase()]?.responses?.[status!]?.content?.['application/json']?.examples?.[name!];
        expect(example, `${where}: a named example in the document`).toBeDefined();
        expect(b.value, where).toEqual(example.value);
        expectParses(registered('Error'), b.value, where);
      } else {
        const component = doc.components.schemas[marker] as Json | undefined;
        expect(component, `${where}: a component of openapi/openapi.json`).toBeDefined();
        expect(component!.examples, where).toContainEqual(b.value);
        expectParses(registered(marker), b.value, where);
      }
      seen.add(marker);
    }
    for (const id of ['CreateBatch', 'Batch', 'CancelBatch', 'PutLimits', 'SpendingLimits', 'ArrearsPaid', 'zod:DelegateTaskArgs']) expect(seen, id).toContain(id);
  });

  it('documents every batch, limits and arrears route of the document, and the delegate_task tool', () => {
    for (const [path, ops] of Object.entries(doc.paths as Json)) {
      if (!/^\/v1\/(batches|limits|payers)/.test(path)) continue;
      for (const method of Object.keys(ops as Json)) expect(markdown, `${method} ${path}`).toContain(`| ${method.toUpperCase()} | ${path} |`);
    }
    expect(markdown).toContain('delegate_task');
    expect(markdown).toMatch(/batch\.partially_failed/);
  });

  it('is linked from the README', () => {
    expect(readFileSync(new URL('../README.md', import.meta.url), 'utf8')).toContain('docs/API-batches.md');
  });
});
