import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAbi } from 'viem';
import { describe, expect, it } from 'vitest';
import {
  abiDrift,
  abiItemText,
  artifactsDir,
  DEV_CONTRACTS,
  multicall3Artifact,
  readArtifactJson,
  testUsdcAbi,
  testUsdcArtifact,
} from '../../src/chain/dev/contracts.js';
import { usdcAbi } from '../../src/chain/usdc.js';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('dev contracts: the committed artifacts and their typed ABIs', () => {
  it('finds contracts/artifacts from src/chain/dev', () => {
    expect(artifactsDir()).toBe(join(REPO_ROOT, 'contracts', 'artifacts'));
  });

  it.each(Object.keys(DEV_CONTRACTS) as (keyof typeof DEV_CONTRACTS)[])('types exactly the ABI of contracts/artifacts/%s.json', (name) => {
    const artifact = readArtifactJson(name);
    expect(abiDrift(DEV_CONTRACTS[name], artifact.abi)).toBeUndefined();
    expect(DEV_CONTRACTS[name]).toHaveLength(artifact.abi.length);
  });

  it('loads each artifact with its own ABI and bytecode', () => {
    const usdc = testUsdcArtifact();
    expect(usdc.abi).toEqual(readArtifactJson('TestUSDC').abi);
    expect(usdc.bytecode).toMatch(/^0x[0-9a-f]+$/);
    expect(multicall3Artifact().deployedBytecode.length).toBeGreaterThan(2);
  });

  it('names what differs when a contract changes and its typed ABI does not', () => {
    const changed = [...testUsdcAbi.filter((item) => !(item.type === 'function' && item.name === 'mint')), ...parseAbi(['function burn(uint256 amount)'])];
    expect(abiDrift(changed, readArtifactJson('TestUSDC').abi)).toEqual({
      missing: ['function mint(address to, uint256 amount) nonpayable returns (bool)'],
      extra: ['function burn(uint256 amount) nonpayable returns ()'],
    });
    // Parameter names, `indexed` and tuple components count, solc's internalType does not.
    const [event] = parseAbi(['event Transfer(address indexed from, address indexed to, uint256 value)']);
    expect(abiItemText(event!)).toBe('event Transfer(address indexed from, address indexed to, uint256 value)');
  });

  it('implements every USDC function production calls (src/chain/usdc.ts)', () => {
    const token = new Set(readArtifactJson('TestUSDC').abi.map(abiItemText));
    // Production's hand-written ABI may name parameters differently: compare names and types only.
    const signature = (text: string) => text.replace(/ (\w+)(?=[,)])/g, '');
    const tokenSignatures = new Set([...token].map(signature));
    for (const item of usdcAbi) expect(tokenSignatures, abiItemText(item)).toContain(signature(abiItemText(item)));
  });
});

/** Every .ts file under `dir`, relative to the repo root. */
function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => relative(REPO_ROOT, join(entry.parentPath, entry.name)));
}

/** Module specifiers a file imports or re-exports: `[specifier, type-only, dynamic]`. */
function importsOf(file: string): { specifier: string; typeOnly: boolean; dynamic: boolean }[] {
  const text = readFileSync(join(REPO_ROOT, file), 'utf8');
  const found: { specifier: string; typeOnly: boolean; dynamic: boolean }[] = [];
  for (const m of text.matchAll(/^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/gm)) {
    found.push({ specifier: m[3]!, typeOnly: Boolean(m[2]), dynamic: false });
  }
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push({ specifier: m[1]!, typeOnly: false, dynamic: true });
  return found;
}

describe('the dev chain stays apart from production code', () => {
  it('is imported under src/ only by the embedded-chain start-up (server.ts, lazily) and the faucet route', () => {
    const offenders: string[] = [];
    for (const file of sourceFiles(join(REPO_ROOT, 'src'))) {
      if (file.startsWith('src/chain/dev/')) continue;
      for (const { specifier, typeOnly, dynamic } of importsOf(file)) {
        if (!/(^|\/)chain\/dev\//.test(specifier) && !/^\.\/dev\//.test(specifier)) continue;
        // server.ts loads the dev chain only when there is no CHAIN_RPC_URL: a dynamic import (types are free).
        if (file === 'src/server.ts' && (dynamic || typeOnly)) continue;
        if (file === 'src/routes/dev.ts') continue;
        offenders.push(`${file} imports ${specifier}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('keeps anvil, its processes and the faucet under src/chain/dev/', () => {
    const chainFiles = sourceFiles(join(REPO_ROOT, 'src', 'chain')).sort();
    expect(chainFiles.filter((f) => !f.startsWith('src/chain/dev/'))).toEqual([
      'src/chain/channels.ts',
      'src/chain/constants.ts',
      'src/chain/nonces.ts',
      'src/chain/operator.ts',
      'src/chain/usdc.ts',
      'src/chain/wallets.ts',
    ]);
  });
});
