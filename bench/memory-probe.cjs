/**
 * Preloaded by bench/memory.ts into the service (`NODE_OPTIONS=--require …/memory-probe.cjs`) to
 * say where its memory goes; no part of the service. Inert unless MEMORY_PROBE_DIR is set and this
 * process is the server itself (`dist/server.js` or `src/server.ts`, not npm, tsc or the tsx CLI).
 *
 * - Keeps a weak reference to every WebAssembly.Memory created or exported (PGlite's heap, its
 *   initdb's, tiny-secp256k1's, undici's llhttp), wrapping the constructors before any module loads.
 * - Answers requests: the bench writes `<dir>/<pid>.req` ("plain" or "gc": a full GC first) and
 *   this process replaces it with `<dir>/<pid>.json` (checked every 250 ms on an unref'd timer).
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const v8 = require('node:v8');

const dir = process.env.MEMORY_PROBE_DIR;
const script = process.argv[1] ?? '';
if (dir && /(^|[/\\])(dist[/\\]server\.js|src[/\\]server\.ts)$/.test(script)) install(dir);

function install(dir) {
  const memories = [];
  const Memory = WebAssembly.Memory;
  const track = (memory, origin) => {
    if (memory instanceof Memory && !memories.some((m) => m.ref.deref() === memory)) {
      const caller = (new Error().stack ?? '').split('\n').find((l) => /node_modules|node:internal\/deps/.test(l)) ?? '';
      memories.push({ ref: new WeakRef(memory), origin, caller: caller.trim() });
    }
  };
  WebAssembly.Memory = new Proxy(Memory, {
    construct(target, args, newTarget) {
      const memory = Reflect.construct(target, args, newTarget);
      track(memory, `new WebAssembly.Memory(${JSON.stringify(args[0])})`);
      return memory;
    },
  });
  const exported = (instance) => {
    for (const [name, value] of Object.entries(instance?.exports ?? {})) track(value, `exported "${name}"`);
  };
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = async function (...args) {
    const result = await instantiate.apply(this, args);
    exported(result instanceof WebAssembly.Instance ? result : result.instance);
    return result;
  };
  const instantiateStreaming = WebAssembly.instantiateStreaming;
  if (instantiateStreaming) {
    WebAssembly.instantiateStreaming = async function (...args) {
      const result = await instantiateStreaming.apply(this, args);
      exported(result.instance);
      return result;
    };
  }
  WebAssembly.Instance = new Proxy(WebAssembly.Instance, {
    construct(target, args, newTarget) {
      const instance = Reflect.construct(target, args, newTarget);
      exported(instance);
      return instance;
    },
  });

  let gc;
  const fullGc = () => {
    if (!gc) {
      v8.setFlagsFromString('--expose-gc');
      gc = require('node:vm').runInNewContext('gc');
    }
    gc();
  };

  const request = path.join(dir, `${process.pid}.req`);
  setInterval(() => {
    let mode;
    try {
      mode = fs.readFileSync(request, 'utf8').trim();
      fs.unlinkSync(request);
    } catch {
      return;
    }
    if (mode === 'gc') fullGc();
    const report = snapshot(memories);
    const tmp = path.join(dir, `${process.pid}.json.tmp`);
    fs.writeFileSync(tmp, JSON.stringify(report));
    fs.renameSync(tmp, path.join(dir, `${process.pid}.json`));
  }, 250).unref();
}

/** Resident kB of every mapping in /proc/self/smaps, with its size and what backs it. */
function mappings() {
  const out = [];
  let current;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      current = { size: (parseInt(head[2], 16) - parseInt(head[1], 16)) / 1024, perms: head[3], name: head[4], rss: 0 };
      out.push(current);
    } else if (current && line.startsWith('Rss:')) {
      current.rss = Number(line.split(/\s+/)[1]);
    }
  }
  return out;
}

function snapshot(memories) {
  const maps = mappings();
  const wasm = [];
  const matched = new Set();
  for (const m of memories) {
    const memory = m.ref.deref();
    if (!memory) continue;
    const bytes = memory.buffer.byteLength;
    // V8 maps a wasm memory's accessible pages as one read-write mapping of exactly its size.
    const mapping = maps.find((x) => !matched.has(x) && x.size * 1024 === bytes && x.perms.startsWith('rw'));
    if (mapping) matched.add(mapping);
    wasm.push({ origin: m.origin, caller: m.caller, bytes, residentBytes: mapping ? mapping.rss * 1024 : null });
  }
  const kB = (filter) => maps.filter(filter).reduce((sum, x) => sum + x.rss, 0) * 1024;
  return {
    pid: process.pid,
    memoryUsage: process.memoryUsage(),
    heapSpaces: v8.getHeapSpaceStatistics().map((s) => ({ name: s.space_name, used: s.space_used_size, committed: s.space_size })),
    wasm,
    residentFileBacked: kB((x) => x.name.startsWith('/')),
    residentAnonymous: kB((x) => !x.name.startsWith('/')),
    residentExecutableAnonymous: kB((x) => !x.name.startsWith('/') && x.perms.includes('x')),
  };
}
