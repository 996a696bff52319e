import type { ErrorCode } from '../errors.js';
import { errorCodesFor, errorExample } from './error-examples.js';

/**
 * The last pass over the generated OpenAPI document (openapi.ts `transformObject`).
 *
 * - **One component per shape.** fastify-type-provider-zod emits every registered schema twice:
 *   `X` (zod's `io: 'output'`, what responses are serialized from) and `XInput` (`io: 'input'`,
 *   what requests are validated against). Here components no operation reaches are dropped; an
 *   `XInput` whose `X` is not used is renamed `X`; and an `XInput` identical to `X` (once its own
 *   references are merged) is merged into `X`. What remains as `XInput` is a shape used both ways
 *   that really differs: as sent, fields with defaults may be omitted and unknown fields are not
 *   described; as answered, every defaulted field is present and nothing else is.
 * - **Tags** that no operation uses (admin without ADMIN_API_KEY, dev without the dev chain) are left out.
 * - **Security** of priced routes: x402 only (the caller plugin defers to the x402 payer there,
 *   so they answer no 401 either); with x402 off the wallet signature or session token instead,
 *   which is what the service takes then.
 * - **Error examples**: each error status of each operation shows the codes that operation
 *   answers with that status (error-examples.ts), one named example per code.
 * - **Query parameters carry no examples**: Swagger UI would pre-fill them and quietly filter.
 */

type Json = Record<string, unknown>;

interface Operation {
  operationId?: string;
  security?: Record<string, string[]>[];
  parameters?: Json[];
  responses?: Record<string, { content?: Record<string, Json> }>;
}

const REF = '#/components/schemas/';
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'];

export interface TidyOptions {
  /** x402 on: priced routes take a payment; off: a wallet signature or session token. */
  x402Enabled: boolean;
}

function operations(doc: Json): [string, string, Operation][] {
  const paths = (doc.paths ?? {}) as Record<string, Record<string, Operation>>;
  return Object.entries(paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, op]): [string, string, Operation] => [method, path, op]),
  );
}

function refsIn(value: unknown, into: Set<string>): Set<string> {
  const text = JSON.stringify(value) ?? '';
  for (const m of text.matchAll(/"#\/components\/schemas\/([^"]+)"/g)) into.add(m[1]!);
  return into;
}

/** Rewrites every `$ref` to a component named in `renames`. */
function renameRefs<T>(value: T, renames: Map<string, string>): T {
  if (renames.size === 0) return value;
  return JSON.parse(JSON.stringify(value), (key, v: unknown) =>
    key === '$ref' && typeof v === 'string' && v.startsWith(REF) && renames.has(v.slice(REF.length)) ? `${REF}${renames.get(v.slice(REF.length))}` : v,
  ) as T;
}

function usedSchemas(doc: Json, schemas: Record<string, unknown>): Set<string> {
  const used = refsIn(doc.paths, new Set());
  const queue = [...used];
  while (queue.length > 0) {
    const name = queue.pop()!;
    for (const ref of refsIn(schemas[name], new Set())) {
      if (!used.has(ref)) {
        used.add(ref);
        queue.push(ref);
      }
    }
  }
  return used;
}

function dedupeSchemas(doc: Json): Json {
  const components = (doc.components ?? {}) as Json;
  let schemas = { ...((components.schemas ?? {}) as Record<string, unknown>) };
  let out: Json = doc;
  // Merge or rename until nothing changes: merging B into B's input lets A's input (which refers to B) match A.
  for (;;) {
    const used = usedSchemas(out, schemas);
    for (const name of Object.keys(schemas)) if (!used.has(name)) delete schemas[name];
    const renames = new Map<string, string>();
    for (const name of Object.keys(schemas)) {
      if (!name.endsWith('Input')) continue;
      const base = name.slice(0, -'Input'.length);
      if (!(base in schemas)) renames.set(name, base);
      else if (JSON.stringify(schemas[name]) === JSON.stringify(schemas[base])) renames.set(name, base);
    }
    if (renames.size === 0) break;
    const next: Record<string, unknown> = {};
    for (const [name, schema] of Object.entries(schemas)) {
      const target = renames.get(name) ?? name;
      if (renames.has(name) && target in schemas && !renames.has(target)) continue; // merged into its twin
      next[target] = renameRefs(schema, renames);
    }
    schemas = next;
    out = { ...out, paths: renameRefs(out.paths, renames) };
  }
  for (const name of Object.keys(schemas)) {
    if (!name.endsWith('Input')) continue;
    const schema = schemas[name] as Json;
    const note = `As sent in a request (fields with a default may be left out); \`${name.slice(0, -'Input'.length)}\` is the form answered.`;
    schemas[name] = { ...schema, description: schema.description ? `${String(schema.description)} ${note}` : note };
  }
  const sorted = Object.fromEntries(Object.keys(schemas).sort().map((k) => [k, schemas[k]]));
  return { ...out, components: { ...components, schemas: sorted } };
}

function namedErrorExamples(codes: readonly ErrorCode[]): Record<string, { summary: string; value: unknown }> {
  return Object.fromEntries(codes.map((code) => [code, { summary: code, value: errorExample(code) }]));
}

export function tidyDocument(input: Json, opts: TidyOptions): Json {
  const doc = dedupeSchemas(input);
  const usedTags = new Set<string>();
  for (const [, , op] of operations(doc)) {
    for (const tag of (op as { tags?: string[] }).tags ?? []) usedTags.add(tag);
    if (op.security?.some((s) => 'x402' in s)) {
      // x402 on: the payer is the caller and no signature is read, so no 401 either; off: a signature instead.
      if (opts.x402Enabled) delete op.responses?.['401'];
      else op.security = [{ siwe: [] }, { bearerAuth: [] }];
    }
    for (const param of op.parameters ?? []) {
      if (param.in !== 'query') continue;
      delete param.example;
      delete param.examples;
      const schema = param.schema as Json | undefined;
      if (schema) {
        delete schema.example;
        delete schema.examples;
      }
    }
    for (const [status, response] of Object.entries(op.responses ?? {})) {
      const media = response.content?.['application/json'];
      if (Number(status) < 400 || !media || JSON.stringify(media.schema) !== JSON.stringify({ $ref: `${REF}Error` })) continue;
      delete media.example;
      const codes = errorCodesFor(op.operationId, Number(status));
      if (codes.length > 0) media.examples = namedErrorExamples(codes);
    }
  }
  const tags = doc.tags as { name: string }[] | undefined;
  return tags ? { ...doc, tags: tags.filter((t) => usedTags.has(t.name)) } : doc;
}
