import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isHex, type Abi, type Hex } from 'viem';
import { multicall3Abi, testUsdcAbi } from './abi.js';

/**
 * Compiled contracts committed under contracts/artifacts (written by
 * scripts/compile-contracts.ts). The ABIs come from the generated ./abi.ts so viem gets full
 * types; the bytecode is read from the JSON at run time.
 */
export interface ContractArtifact<TAbi extends Abi> {
  readonly contractName: string;
  readonly abi: TAbi;
  /** Creation code (constructor arguments not included). */
  readonly bytecode: Hex;
  /** Runtime code as solc emits it (immutables still zero). */
  readonly deployedBytecode: Hex;
}

const ARTIFACTS_RELATIVE = join('contracts', 'artifacts');
/** src/chain → repo root is two levels up, as is dist/chain; allow a deeper dist layout too. */
const MAX_LEVELS_UP = 4;

let artifactsDirCache: string | undefined;
const artifactCache = new Map<string, ContractArtifact<Abi>>();

/** Finds contracts/artifacts walking up from this module (works from src/chain and dist/chain). */
export function artifactsDir(): string {
  if (artifactsDirCache) return artifactsDirCache;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let level = 0; level <= MAX_LEVELS_UP; level++) {
    const candidate = join(dir, ARTIFACTS_RELATIVE);
    if (existsSync(candidate)) {
      artifactsDirCache = candidate;
      return candidate;
    }
    dir = dirname(dir);
  }
  throw new Error(
    `contracts/artifacts not found above ${fileURLToPath(import.meta.url)}; run "npm run contracts:build"`,
  );
}

function readBytecodes(contractName: string): { bytecode: Hex; deployedBytecode: Hex } {
  const file = join(artifactsDir(), `${contractName}.json`);
  const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const { bytecode, deployedBytecode } = json;
  if (!isHex(bytecode) || !isHex(deployedBytecode) || bytecode.length <= 2 || deployedBytecode.length <= 2) {
    throw new Error(`${file} has no valid bytecode/deployedBytecode`);
  }
  return { bytecode, deployedBytecode };
}

function loadArtifact<TAbi extends Abi>(contractName: string, abi: TAbi): ContractArtifact<TAbi> {
  const cached = artifactCache.get(contractName);
  if (cached) return cached as ContractArtifact<TAbi>;
  const artifact: ContractArtifact<TAbi> = { contractName, abi, ...readBytecodes(contractName) };
  artifactCache.set(contractName, artifact);
  return artifact;
}

/** The USDC-like dev token (contracts/TestUSDC.sol). Constructor: (address minter). */
export function testUsdcArtifact(): ContractArtifact<typeof testUsdcAbi> {
  return loadArtifact('TestUSDC', testUsdcAbi);
}

/** Multicall3-compatible batcher (contracts/Multicall3.sol). No constructor. */
export function multicall3Artifact(): ContractArtifact<typeof multicall3Abi> {
  return loadArtifact('Multicall3', multicall3Abi);
}

export { multicall3Abi, testUsdcAbi };
