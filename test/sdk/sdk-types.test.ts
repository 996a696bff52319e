/**
 * The SDK's types are generated from the committed OpenAPI document (`npm run sdk:types`):
 * regenerating them must give the committed sdk/src/schema.d.ts, byte for byte.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('sdk/src/schema.d.ts', () => {
  it('is what openapi-typescript generates from openapi/openapi.json (run `npm run sdk:types` if not)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'sdk-types-'));
    try {
      const out = path.join(dir, 'schema.d.ts');
      execFileSync(process.execPath, [path.join(ROOT, 'node_modules/openapi-typescript/bin/cli.js'), path.join(ROOT, 'openapi/openapi.json'), '-o', out], {
        cwd: ROOT,
        stdio: 'pipe',
      });
      const committed = readFileSync(path.join(ROOT, 'sdk/src/schema.d.ts'), 'utf8');
      expect(committed === readFileSync(out, 'utf8'), 'sdk/src/schema.d.ts is stale: run `npm run sdk:types`').toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
