/**
 * Compiles contracts/*.sol offline with solc-js and writes the committed artifacts:
 *   contracts/artifacts/<Name>.json = { contractName, abi, bytecode, deployedBytecode }
 * The dev chain (src/chain/dev/contracts.ts) reads them at run time. Its typed, human-readable
 * ABIs must list the same items: this script checks them against the new artifacts and names
 * every signature to add or remove there when a contract's interface changed.
 *
 * Run: npx tsx scripts/compile-contracts.ts   (npm run contracts:build)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';
import type { Abi } from 'viem';
import { abiDrift, DEV_CONTRACTS, describeAbiDrift, type DevContractName } from '../src/chain/dev/contracts.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CONTRACTS_DIR = join(ROOT, 'contracts');
const ARTIFACTS_DIR = join(CONTRACTS_DIR, 'artifacts');

/** Source file name → contract name (a key of DEV_CONTRACTS in src/chain/dev/contracts.ts). */
const CONTRACTS: ReadonlyArray<{ file: string; contractName: DevContractName }> = [
  { file: 'TestUSDC.sol', contractName: 'TestUSDC' },
  { file: 'Multicall3.sol', contractName: 'Multicall3' },
  // x402 batch-settlement channels, placed at @x402/evm's addresses (src/chain/dev/batch-settlement-contracts.ts)
  { file: 'BatchSettlement.sol', contractName: 'BatchSettlement' },
  { file: 'Erc3009DepositCollector.sol', contractName: 'Erc3009DepositCollector' },
];

interface Artifact {
  contractName: string;
  abi: unknown[];
  bytecode: string;
  deployedBytecode: string;
}

interface SolcError {
  severity: 'error' | 'warning' | 'info';
  formattedMessage: string;
}

interface SolcContractOutput {
  abi: unknown[];
  evm: { bytecode: { object: string }; deployedBytecode: { object: string } };
}

interface SolcOutput {
  errors?: SolcError[];
  contracts?: Record<string, Record<string, SolcContractOutput>>;
}

function buildStandardInput(): string {
  const sources = Object.fromEntries(
    CONTRACTS.map(({ file }) => [file, { content: readFileSync(join(CONTRACTS_DIR, file), 'utf8') }]),
  );
  return JSON.stringify({
    language: 'Solidity',
    sources,
    settings: {
      evmVersion: 'cancun',
      optimizer: { enabled: true, runs: 200 },
      outputSelection: {
        '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] },
      },
    },
  });
}

function compile(): SolcOutput {
  const output = JSON.parse(solc.compile(buildStandardInput())) as SolcOutput;
  const diagnostics = output.errors ?? [];
  for (const diagnostic of diagnostics) {
    if (diagnostic.severity !== 'error') console.warn(diagnostic.formattedMessage);
  }
  const errors = diagnostics.filter((d) => d.severity === 'error');
  if (errors.length > 0) {
    throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join('\n')}`);
  }
  return output;
}

function toArtifact(output: SolcOutput, file: string, contractName: string): Artifact {
  const contract = output.contracts?.[file]?.[contractName];
  if (!contract) throw new Error(`solc produced no output for ${file}:${contractName}`);
  const { bytecode, deployedBytecode } = contract.evm;
  if (!bytecode.object || !deployedBytecode.object) {
    throw new Error(`${contractName} has empty bytecode (abstract contract?)`);
  }
  return {
    contractName,
    abi: contract.abi,
    bytecode: `0x${bytecode.object}`,
    deployedBytecode: `0x${deployedBytecode.object}`,
  };
}

function main(): void {
  const started = performance.now();
  console.log(`compiling with solc ${solc.version()}`);
  const output = compile();
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const drifts: string[] = [];
  for (const { file, contractName } of CONTRACTS) {
    const artifact = toArtifact(output, file, contractName);
    const path = join(ARTIFACTS_DIR, `${contractName}.json`);
    writeFileSync(path, `${JSON.stringify(artifact, null, 2)}\n`);
    const runtimeBytes = (artifact.deployedBytecode.length - 2) / 2;
    console.log(`wrote ${path} (runtime ${runtimeBytes} bytes)`);
    const drift = abiDrift(DEV_CONTRACTS[contractName], artifact.abi as Abi);
    if (drift) drifts.push(describeAbiDrift(contractName, drift));
  }
  console.log(`compiled in ${Math.round(performance.now() - started)} ms`);
  if (drifts.length > 0) {
    console.error(drifts.join('\n'));
    process.exitCode = 1;
  }
}

main();
