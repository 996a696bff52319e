import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { configNames, loadConfig } from '../src/config.js';
import { REAL_CHAIN_ENV } from './helpers/chain-settings.js';

/**
 * The container files against the code: docker-compose.yml only sets names the config reads
 * and its values pass the config schema; the Dockerfile's runtime stage is non-root,
 * production-only and starts dist/server.js; everything it copies from the context exists.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const readRepoFile = (name: string): string => readFileSync(path.join(root, name), 'utf8');

// ---------- docker-compose.yml ----------

interface ComposeService {
  image?: string;
  build?: unknown;
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: unknown };
  ports?: string[];
}
interface ComposeFile {
  services: Record<string, ComposeService>;
}

/** `${NAME:-default}`, `${NAME-default}`, `${NAME}`, `$NAME` and `$$` as compose resolves them from `vars`. */
function interpolate(value: string, vars: Record<string, string | undefined> = {}): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, braced, op, dflt, bare) => {
    if (m === '$$') return '$';
    const name = (braced ?? bare) as string;
    const v = vars[name];
    if (op === ':-') return v ? v : (dflt as string);
    if (op === '-') return v ?? (dflt as string);
    return v ?? '';
  });
}

/** A service's environment as compose would pass it (list or map form, values interpolated). */
function serviceEnv(service: ComposeService, vars: Record<string, string | undefined> = {}): Record<string, string> {
  const raw = service.environment ?? {};
  const entries: [string, string][] = Array.isArray(raw)
    ? raw.map((line) => {
        const i = line.indexOf('=');
        return i < 0 ? [line, ''] : [line.slice(0, i), line.slice(i + 1)];
      })
    : Object.entries(raw).map(([k, v]) => [k, v === null ? '' : String(v)]);
  return Object.fromEntries(entries.map(([k, v]) => [k, interpolate(v, vars)]));
}

function unknownNames(names: string[]): string[] {
  const known = new Set<string>(configNames);
  return names.filter((n) => !known.has(n));
}

function loadCompose(): ComposeFile {
  const doc = parse(readRepoFile('docker-compose.yml')) as ComposeFile;
  expect(doc?.services, 'docker-compose.yml has services').toBeTypeOf('object');
  return doc;
}

function service(compose: ComposeFile, name: string): ComposeService {
  const s = compose.services[name];
  expect(s, `compose service "${name}"`).toBeDefined();
  return s!;
}

describe('docker-compose.yml', () => {
  const compose = loadCompose();
  const app = service(compose, 'app');
  const postgres = service(compose, 'postgres');

  it('sets only environment names the config reads (a typo fails)', () => {
    const names = Object.keys(serviceEnv(app));
    expect(names.length).toBeGreaterThan(0);
    expect(unknownNames(names)).toEqual([]);
    // The check itself catches a misspelling.
    expect(unknownNames(['DATABSE_URL', 'PORT'])).toEqual(['DATABSE_URL']);
  });

  it("feeds loadConfig a valid configuration whose DATABASE_URL is the compose postgres service", () => {
    const env = serviceEnv(app);
    const config = loadConfig(env);
    expect(config.DATABASE_URL).toBeDefined();
    const url = new URL(config.DATABASE_URL!);
    expect(Object.keys(compose.services)).toContain(url.hostname);
    expect(url.hostname).toBe('postgres');
    expect(url.port || '5432').toBe('5432');

    const pgEnv = serviceEnv(postgres);
    expect(decodeURIComponent(url.username)).toBe(pgEnv.POSTGRES_USER ?? 'postgres');
    expect(decodeURIComponent(url.password)).toBe(pgEnv.POSTGRES_PASSWORD);
    expect(url.pathname.slice(1)).toBe(pgEnv.POSTGRES_DB ?? pgEnv.POSTGRES_USER ?? 'postgres');
    expect(config.HOST).toBe('0.0.0.0');
  });

  it('follows a password given to compose into both services', () => {
    const vars = { POSTGRES_PASSWORD: 'from-the-shell' };
    const url = new URL(loadConfig(serviceEnv(app, vars)).DATABASE_URL!);
    expect(url.password).toBe(serviceEnv(postgres, vars).POSTGRES_PASSWORD);
  });

  it('starts the app only once postgres is healthy, and postgres has a pg_isready healthcheck', () => {
    const deps = app.depends_on;
    expect(deps && !Array.isArray(deps), 'depends_on in long form').toBe(true);
    expect((deps as Record<string, { condition?: string }>).postgres?.condition).toBe('service_healthy');
    expect(JSON.stringify(postgres.healthcheck?.test ?? '')).toContain('pg_isready');
    expect(postgres.image).toMatch(/^postgres:16/);
  });

  it('publishes the port the app listens on and builds the Dockerfile', () => {
    const config = loadConfig(serviceEnv(app));
    expect(app.build).toBeDefined();
    expect((app.ports ?? []).map(String)).toContain(`${config.PORT}:${config.PORT}`);
    expect(app.healthcheck?.test).toBeDefined();
  });
});

describe('docker-compose.yml scale-out profile', () => {
  const compose = loadCompose();
  const chain = REAL_CHAIN_ENV;
  const roleOf = (s: ComposeService & { command?: string[] }) => s.command?.[s.command.indexOf('--role') + 1];

  it('runs api and worker replicas of the same image and environment, each with its --role', () => {
    for (const [name, role] of [['api', 'api'], ['worker', 'worker']] as const) {
      const s = service(compose, name) as ComposeService & { command?: string[]; deploy?: { replicas?: number }; profiles?: string[] };
      expect(roleOf(s)).toBe(role);
      expect(s.deploy?.replicas).toBeGreaterThanOrEqual(2);
      expect(s.profiles).toEqual(['scale-out']);
      expect(serviceEnv(s)).toEqual(serviceEnv(service(compose, 'app')));
      const config = loadConfig({ ...serviceEnv(s, chain), ROLE: role });
      expect(config.ROLE).toBe(role);
    }
  });

  it('a worker refuses to start without a real chain, naming the setting', () => {
    const worker = service(compose, 'worker');
    expect(() => loadConfig({ ...serviceEnv(worker), ROLE: 'worker' })).toThrow(/CHAIN_RPC_URL: required with ROLE=worker/);
  });
});

describe('compose interpolation (as used above)', () => {
  it('resolves defaults, set values and escapes', () => {
    expect(interpolate('a${X:-d}b')).toBe('adb');
    expect(interpolate('a${X:-d}b', { X: 'v' })).toBe('avb');
    expect(interpolate('${X-d}', { X: '' })).toBe('');
    expect(interpolate('$$HOME')).toBe('$HOME');
  });
});

// ---------- Dockerfile ----------

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = [];
  let current = '';
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line.startsWith('#') || (line === '' && current === '')) continue;
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    current += line;
    if (current.trim()) logical.push(current.trim());
    current = '';
  }
  if (current.trim()) logical.push(current.trim());
  return logical.map((l) => {
    const m = /^(\S+)\s*(.*)$/.exec(l)!;
    return { keyword: m[1]!.toUpperCase(), args: m[2]! };
  });
}

function stagesOf(instructions: Instruction[]): Stage[] {
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(ins.args)!;
      stages.push({ from: m[1]!, name: m[2], instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return stages;
}

/** Arguments of a shell-form or JSON-form instruction, with `--flag=…` options removed. */
function argList(args: string): string[] {
  const list = args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  return list.filter((a) => !a.startsWith('--'));
}

/** Paths a COPY/ADD takes from the build context (not from another stage). */
function contextSources(stage: Stage): string[] {
  return stage.instructions
    .filter((i) => (i.keyword === 'COPY' || i.keyword === 'ADD') && !/--from=/.test(i.args))
    .flatMap((i) => argList(i.args).slice(0, -1));
}

function dockerignoreEntries(): string[] {
  const file = path.join(root, '.dockerignore');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim().replace(/^\/+|\/+$/g, ''))
    .filter((l) => l && !l.startsWith('#'));
}

describe('Dockerfile', () => {
  const stages = stagesOf(parseDockerfile(readRepoFile('Dockerfile')));
  const final = stages.at(-1)!;
  const finalOf = (keyword: string) => final.instructions.filter((i) => i.keyword === keyword);

  it('is multi-stage on Node 20', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.from).toMatch(/^node:20/);
  });

  it('runs its final stage as a non-root user', () => {
    const user = finalOf('USER').at(-1)?.args.trim();
    expect(user, 'USER in the final stage').toBeDefined();
    const name = user!.split(':')[0]!;
    expect(['root', '0']).not.toContain(name);
  });

  it('installs production dependencies only in the final stage', () => {
    const runs = finalOf('RUN').map((i) => i.args);
    expect(runs.some((r) => /\bnpm ci\b[^&;|]*--omit=dev/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm (ci|install)\b(?![^&;|]*--omit=dev)/.test(r))).toBe(false);
  });

  it('starts dist/server.js and copies the build output, migrations and contract artifacts', () => {
    const cmd = finalOf('CMD').at(-1);
    expect(cmd, 'CMD in the final stage').toBeDefined();
    expect(argList(cmd!.args)).toEqual(['node', 'dist/server.js']);
    const targets = final.instructions
      .filter((i) => i.keyword === 'COPY')
      .map((i) => (argList(i.args).at(-1) ?? '').replace(/^\.\//, '').replace(/\/+$/, ''));
    expect(targets).toEqual(expect.arrayContaining(['dist', 'migrations', 'contracts/artifacts']));
    expect(finalOf('HEALTHCHECK').at(-1)?.args).toContain('/healthz');
  });

  it('copies from the build context only paths that exist and are not .dockerignored', () => {
    const sources = stages.flatMap(contextSources);
    expect(sources.length).toBeGreaterThan(0);
    const ignored = new Set(dockerignoreEntries());
    for (const src of sources) {
      expect(existsSync(path.join(root, src)), `${src} exists`).toBe(true);
      expect(ignored.has(src.replace(/^\.\//, '').split('/')[0]!), `${src} is not in .dockerignore`).toBe(false);
    }
  });
});
