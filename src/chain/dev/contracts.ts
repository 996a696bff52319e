import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isHex, parseAbi, type Abi, type AbiParameter, type Hex } from 'viem';

/**
 * The dev chain's contracts (contracts/*.sol), compiled by scripts/compile-contracts.ts into the
 * committed contracts/artifacts/<Name>.json = { contractName, abi, bytecode, deployedBytecode }.
 *
 * The JSON files are the source of truth and are read at run time, from src/chain/dev under tsx
 * and from dist/chain/dev in a build (the Docker image copies contracts/artifacts next to dist).
 * A JSON import cannot give viem the literal types it infers reads and writes from, so each ABI
 * is also written below in human-readable form for the types; loading an artifact checks that the
 * two list exactly the same items, so they cannot drift apart unnoticed.
 *
 * Dev only: production code reads the real USDC through ../usdc.ts.
 */

/** TestUSDC (contracts/TestUSDC.sol): USDC's ERC-20 + EIP-2612 + EIP-3009 surface, minted by one minter. */
export const testUsdcAbi = parseAbi([
  'constructor(address minter_)',
  'event Approval(address indexed owner, address indexed spender, uint256 value)',
  'event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce)',
  'event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)',
  'event Mint(address indexed minter, address indexed to, uint256 amount)',
  'event Transfer(address indexed from, address indexed to, uint256 value)',
  'function CANCEL_AUTHORIZATION_TYPEHASH() view returns (bytes32)',
  'function DOMAIN_SEPARATOR() view returns (bytes32)',
  'function PERMIT_TYPEHASH() view returns (bytes32)',
  'function RECEIVE_WITH_AUTHORIZATION_TYPEHASH() view returns (bytes32)',
  'function TRANSFER_WITH_AUTHORIZATION_TYPEHASH() view returns (bytes32)',
  'function allowance(address, address) view returns (uint256)',
  'function approve(address spender, uint256 value) returns (bool)',
  'function authorizationState(address authorizer, bytes32 nonce) view returns (bool)',
  'function balanceOf(address) view returns (uint256)',
  'function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)',
  'function cancelAuthorization(address authorizer, bytes32 nonce, bytes signature)',
  'function decimals() view returns (uint8)',
  'function decreaseAllowance(address spender, uint256 decrement) returns (bool)',
  'function increaseAllowance(address spender, uint256 increment) returns (bool)',
  'function mint(address to, uint256 amount) returns (bool)',
  'function minter() view returns (address)',
  'function name() view returns (string)',
  'function nonces(address) view returns (uint256)',
  'function permit(address owner, address spender, uint256 value, uint256 deadline, bytes signature)',
  'function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)',
  'function receiveWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)',
  'function receiveWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)',
  'function symbol() view returns (string)',
  'function totalSupply() view returns (uint256)',
  'function transfer(address to, uint256 value) returns (bool)',
  'function transferFrom(address from, address to, uint256 value) returns (bool)',
  'function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)',
  'function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s)',
  'function version() view returns (string)',
]);

/** Multicall3 (contracts/Multicall3.sol), installed at the canonical address. */
export const multicall3Abi = parseAbi([
  'function aggregate((address target, bytes callData)[] calls) payable returns (uint256 blockNumber, bytes[] returnData)',
  'function aggregate3((address target, bool allowFailure, bytes callData)[] calls) payable returns ((bool success, bytes returnData)[] returnData)',
  'function aggregate3Value((address target, bool allowFailure, uint256 value, bytes callData)[] calls) payable returns ((bool success, bytes returnData)[] returnData)',
  'function blockAndAggregate((address target, bytes callData)[] calls) payable returns (uint256 blockNumber, bytes32 blockHash, (bool success, bytes returnData)[] returnData)',
  'function getBasefee() view returns (uint256 basefee)',
  'function getBlockHash(uint256 blockNumber) view returns (bytes32 blockHash)',
  'function getBlockNumber() view returns (uint256 blockNumber)',
  'function getChainId() view returns (uint256 chainid)',
  'function getCurrentBlockCoinbase() view returns (address coinbase)',
  'function getCurrentBlockDifficulty() view returns (uint256 difficulty)',
  'function getCurrentBlockGasLimit() view returns (uint256 gaslimit)',
  'function getCurrentBlockTimestamp() view returns (uint256 timestamp)',
  'function getEthBalance(address addr) view returns (uint256 balance)',
  'function getLastBlockHash() view returns (bytes32 blockHash)',
  'function tryAggregate(bool requireSuccess, (address target, bytes callData)[] calls) payable returns ((bool success, bytes returnData)[] returnData)',
  'function tryBlockAndAggregate(bool requireSuccess, (address target, bytes callData)[] calls) payable returns (uint256 blockNumber, bytes32 blockHash, (bool success, bytes returnData)[] returnData)',
]);

/**
 * BatchSettlement (contracts/BatchSettlement.sol): the x402 `batch-settlement` channel contract,
 * placed at the address @x402/evm expects (see ./batch-settlement-contracts.ts).
 */
export const batchSettlementAbi = parseAbi([
  'struct ChannelConfig { address payer; address payerAuthorizer; address receiver; address receiverAuthorizer; address token; uint40 withdrawDelay; bytes32 salt; }',
  'struct Voucher { ChannelConfig channel; uint128 maxClaimableAmount; }',
  'struct VoucherClaim { Voucher voucher; bytes signature; uint128 totalClaimed; }',
  'error AmountAboveAvailable()',
  'error AuthorizerMismatch()',
  'error BalanceOverflow()',
  'error ClaimAboveBalance()',
  'error ClaimAboveVoucher()',
  'error DepositNotReceived()',
  'error EmptyBatch()',
  'error InvalidChannel()',
  'error InvalidCollector()',
  'error InvalidRefundNonce()',
  'error InvalidSignature()',
  'error NoWithdrawalPending()',
  'error NotPayerSide()',
  'error NotReceiverSide()',
  'error Reentered()',
  'error TokenTransferFailed()',
  'error WithdrawDelayNotElapsed()',
  'error WithdrawDelayOutOfRange()',
  'error WithdrawalPending()',
  'error ZeroAmount()',
  'event ChannelClosed(bytes32 indexed channelId, ChannelConfig config)',
  'event ChannelCreated(bytes32 indexed channelId, ChannelConfig config)',
  'event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed)',
  'event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance)',
  'event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount)',
  'event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount)',
  'event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount)',
  'event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter)',
  'function CHANNEL_CONFIG_TYPEHASH() view returns (bytes32)',
  'function CLAIM_BATCH_TYPEHASH() view returns (bytes32)',
  'function CLAIM_ENTRY_TYPEHASH() view returns (bytes32)',
  'function DOMAIN_SEPARATOR() view returns (bytes32)',
  'function MAX_WITHDRAW_DELAY() view returns (uint40)',
  'function MIN_WITHDRAW_DELAY() view returns (uint40)',
  'function REFUND_TYPEHASH() view returns (bytes32)',
  'function VOUCHER_TYPEHASH() view returns (bytes32)',
  'function channels(bytes32 channelId) view returns (uint128 balance, uint128 totalClaimed)',
  'function claim(VoucherClaim[] voucherClaims)',
  'function claimWithSignature(VoucherClaim[] voucherClaims, bytes authorizerSignature)',
  'function deposit(ChannelConfig config, uint128 amount, address collector, bytes collectorData)',
  'function finalizeWithdraw(ChannelConfig config)',
  'function getChannelId(ChannelConfig config) view returns (bytes32)',
  'function getClaimBatchDigest(VoucherClaim[] voucherClaims) view returns (bytes32)',
  'function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) view returns (bytes32)',
  'function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) view returns (bytes32)',
  'function initiateWithdraw(ChannelConfig config, uint128 amount)',
  'function multicall(bytes[] data) returns (bytes[] results)',
  'function pendingWithdrawals(bytes32 channelId) view returns (uint128 amount, uint40 initiatedAt)',
  'function receivers(address receiver, address token) view returns (uint128 totalClaimed, uint128 totalSettled)',
  'function refund(ChannelConfig config, uint128 amount)',
  'function refundNonce(bytes32 channelId) view returns (uint256)',
  'function refundWithSignature(ChannelConfig config, uint128 amount, uint256 nonce, bytes receiverAuthorizerSignature)',
  'function settle(address receiver, address token)',
]);

/** Erc3009DepositCollector (contracts/Erc3009DepositCollector.sol): a channel deposit by ERC-3009 receiveWithAuthorization. */
export const erc3009DepositCollectorAbi = parseAbi([
  'constructor(address settlement_)',
  'error ForwardFailed()',
  'error NotSettlement()',
  'error ZeroSettlement()',
  'function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes collectorData)',
  'function settlement() view returns (address)',
]);

/** The contracts compiled into contracts/artifacts, with the typed ABI each must match. */
export const DEV_CONTRACTS = {
  TestUSDC: testUsdcAbi,
  Multicall3: multicall3Abi,
  BatchSettlement: batchSettlementAbi,
  Erc3009DepositCollector: erc3009DepositCollectorAbi,
} as const;

export type DevContractName = keyof typeof DEV_CONTRACTS;

export interface ContractArtifact<TAbi extends Abi> {
  readonly contractName: string;
  /** The artifact's own ABI (checked equal to the typed ABI above, whose type it carries). */
  readonly abi: TAbi;
  /** Creation code (constructor arguments not included). */
  readonly bytecode: Hex;
  /** Runtime code as solc emits it (immutables still zero). */
  readonly deployedBytecode: Hex;
}

const ARTIFACTS_RELATIVE = join('contracts', 'artifacts');
/** src/chain/dev → repo root is three levels up, as is dist/chain/dev; allow a deeper dist layout too. */
const MAX_LEVELS_UP = 5;

let artifactsDirCache: string | undefined;
const artifactCache = new Map<string, ContractArtifact<Abi>>();

/** Finds contracts/artifacts walking up from this module (works from src/chain/dev and dist/chain/dev). */
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

// ---------------------------------------------------------------------------- ABI comparison

/** One parameter as Solidity writes it: `(address target, bytes callData)[] calls`, `address indexed from`. */
function parameterText(param: AbiParameter & { indexed?: boolean }): string {
  const components = 'components' in param ? param.components : undefined;
  const type = param.type.startsWith('tuple')
    ? `(${(components ?? []).map(parameterText).join(', ')})${param.type.slice('tuple'.length)}`
    : param.type;
  return [type, param.indexed ? 'indexed' : '', param.name ?? ''].filter(Boolean).join(' ');
}

const parametersText = (params: readonly AbiParameter[] | undefined): string => (params ?? []).map(parameterText).join(', ');

/**
 * A canonical one-line form of an ABI item: names, types, tuple components, `indexed` and state
 * mutability, without solc's `internalType` (human-readable ABIs have none).
 */
export function abiItemText(item: Abi[number]): string {
  switch (item.type) {
    case 'function':
      return `function ${item.name}(${parametersText(item.inputs)}) ${item.stateMutability} returns (${parametersText(item.outputs)})`;
    case 'event':
      return `event ${item.name}(${parametersText(item.inputs)})${item.anonymous ? ' anonymous' : ''}`;
    case 'error':
      return `error ${item.name}(${parametersText(item.inputs)})`;
    case 'constructor':
      return `constructor(${parametersText(item.inputs)}) ${item.stateMutability}`;
    default:
      return `${item.type} ${item.stateMutability}`;
  }
}

export interface AbiDrift {
  /** Items the artifact has and the typed ABI lacks. */
  readonly missing: readonly string[];
  /** Items the typed ABI has and the artifact lacks. */
  readonly extra: readonly string[];
}

/** How a typed ABI differs from an artifact's (undefined: same items). */
export function abiDrift(typed: Abi, artifact: Abi): AbiDrift | undefined {
  const typedItems = new Set(typed.map(abiItemText));
  const artifactItems = new Set(artifact.map(abiItemText));
  const missing = [...artifactItems].filter((item) => !typedItems.has(item)).sort();
  const extra = [...typedItems].filter((item) => !artifactItems.has(item)).sort();
  return missing.length === 0 && extra.length === 0 ? undefined : { missing, extra };
}

export function describeAbiDrift(contractName: string, drift: AbiDrift): string {
  return [
    `contracts/artifacts/${contractName}.json and the typed ABI of ${contractName} in src/chain/dev/contracts.ts differ`,
    '(after changing contracts/*.sol, run "npm run contracts:build" and update the signatures):',
    ...drift.missing.map((item) => `  missing from the typed ABI: ${item}`),
    ...drift.extra.map((item) => `  not in the artifact:        ${item}`),
  ].join('\n');
}

// ---------------------------------------------------------------------------- loading

interface ArtifactJson {
  readonly abi: Abi;
  readonly bytecode: Hex;
  readonly deployedBytecode: Hex;
}

/** The JSON of contracts/artifacts/<contractName>.json, its fields checked. */
export function readArtifactJson(contractName: string): ArtifactJson {
  const file = join(artifactsDir(), `${contractName}.json`);
  const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const { abi, bytecode, deployedBytecode } = json;
  if (!Array.isArray(abi)) throw new Error(`${file} has no abi array`);
  if (!isHex(bytecode) || !isHex(deployedBytecode) || bytecode.length <= 2 || deployedBytecode.length <= 2) {
    throw new Error(`${file} has no valid bytecode/deployedBytecode`);
  }
  return { abi: abi as Abi, bytecode, deployedBytecode };
}

function loadArtifact<TName extends DevContractName>(contractName: TName): ContractArtifact<(typeof DEV_CONTRACTS)[TName]> {
  type Typed = (typeof DEV_CONTRACTS)[TName];
  const cached = artifactCache.get(contractName);
  if (cached) return cached as unknown as ContractArtifact<Typed>;
  const json = readArtifactJson(contractName);
  const drift = abiDrift(DEV_CONTRACTS[contractName], json.abi);
  if (drift) throw new Error(describeAbiDrift(contractName, drift));
  const artifact: ContractArtifact<Typed> = {
    contractName,
    abi: json.abi as unknown as Typed,
    bytecode: json.bytecode,
    deployedBytecode: json.deployedBytecode,
  };
  artifactCache.set(contractName, artifact as unknown as ContractArtifact<Abi>);
  return artifact;
}

/** The USDC-like dev token (contracts/TestUSDC.sol). Constructor: (address minter). */
export function testUsdcArtifact(): ContractArtifact<typeof testUsdcAbi> {
  return loadArtifact('TestUSDC');
}

/** Multicall3-compatible batcher (contracts/Multicall3.sol). No constructor. */
export function multicall3Artifact(): ContractArtifact<typeof multicall3Abi> {
  return loadArtifact('Multicall3');
}

/** The x402 batch-settlement channel contract (contracts/BatchSettlement.sol). No constructor. */
export function batchSettlementArtifact(): ContractArtifact<typeof batchSettlementAbi> {
  return loadArtifact('BatchSettlement');
}

/** Its ERC-3009 deposit collector (contracts/Erc3009DepositCollector.sol). Constructor: (address settlement). */
export function erc3009DepositCollectorArtifact(): ContractArtifact<typeof erc3009DepositCollectorAbi> {
  return loadArtifact('Erc3009DepositCollector');
}
