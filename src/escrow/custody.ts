import {
  BaseError,
  TransactionNotFoundError,
  TransactionReceiptNotFoundError,
  createPublicClient,
  encodeFunctionData,
  getAddress,
  http,
  keccak256,
  type Address,
  type Hash,
  type Hex,
  type PublicClient,
} from 'viem';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { UsdcReader, usdcAbi } from '../chain/usdc.js';

/**
 * The wallet that holds escrowed USDC and pays it out. The settlement worker only talks to
 * this interface, so a custodial hot wallet (below) can later be replaced by an escrow
 * contract driven by an operator key without touching the outbox or the worker.
 */
export interface EscrowCustody {
  /** The address that holds the escrowed USDC and sends the payouts. */
  readonly address: Address;
  /** Signs (without sending) a USDC transfer with an explicit nonce. Pure: no network. */
  signTransfer(to: Address, amount: bigint, nonce: number, fees: FeeQuote): Promise<SignedTransfer>;
  /**
   * Sends a signed transaction. Idempotent: sending bytes the node already has in its pool or
   * on chain is not an error. Throws when the node refuses them otherwise.
   */
  broadcast(rawTx: Hex): Promise<void>;
  /** The mined receipt, or null while the transaction is not in a block. */
  receipt(txHash: Hash): Promise<TransferReceipt | null>;
  /** How many blocks confirm `blockNumber` (1 = it is the latest block). */
  confirmations(blockNumber: bigint): Promise<number>;
  /** The wallet's next nonce, counting transactions still in the pool. */
  pendingNonce(): Promise<number>;
  usdcBalance(): Promise<bigint>;
  feeQuote(): Promise<FeeQuote>;
}

export interface FeeQuote {
  maxFeePerGas: bigint;
  maxPriorityFeePerGas: bigint;
}

export interface SignedTransfer {
  rawTx: Hex;
  txHash: Hash;
}

export interface TransferReceipt {
  status: 'success' | 'reverted';
  blockNumber: bigint;
  gasUsed?: bigint;
}

export interface CustodialWalletConfig {
  rpcUrl: string;
  chainId: number;
  /** The USDC token contract. */
  usdc: Address;
  /** The escrow wallet's key. Kept in a closure, never logged, never exposed. */
  privateKey: Hex;
  /** Gas limit of one transfer (default 100 000; a USDC transfer uses ~35–65k). */
  gasLimit?: bigint;
  /** RPC request timeout (default 10 s). */
  timeoutMs?: number;
  /** viem transport retries per RPC call (default 0: the settlement worker retries with backoff). */
  retryCount?: number;
}

/** The node refused a signed transaction and does not know it: it cannot be mined as it is. */
export class BroadcastRejectedError extends Error {
  constructor(
    message: string,
    readonly txHash: Hash,
  ) {
    super(message);
    this.name = 'BroadcastRejectedError';
  }
}

export const DEFAULT_TRANSFER_GAS = 100_000n;

/**
 * Answers to eth_sendRawTransaction that may mean "these bytes are already in": we then look
 * the transaction up and treat the send as done when the node knows it.
 */
const DUPLICATE_ANSWER =
  /already known|already imported|known transaction|already exists|nonce too low|nonce has already been used|replacement transaction underpriced/i;

/**
 * A hot wallet (EOA) as escrow custody: ERC-20 `transfer` calls on the USDC contract, signed
 * locally with explicit nonce, gas limit, EIP-1559 fees and chain id.
 */
export class CustodialEscrowWallet implements EscrowCustody {
  readonly address: Address;
  readonly #account: PrivateKeyAccount;
  readonly #client: PublicClient;
  readonly #usdc: Address;
  readonly #usdcReader: UsdcReader;
  readonly #chainId: number;
  readonly #gasLimit: bigint;

  constructor(config: CustodialWalletConfig) {
    this.#account = privateKeyToAccount(config.privateKey);
    this.address = this.#account.address;
    this.#usdc = getAddress(config.usdc);
    this.#chainId = config.chainId;
    this.#gasLimit = config.gasLimit ?? DEFAULT_TRANSFER_GAS;
    const retryCount = config.retryCount ?? 0;
    const timeoutMs = config.timeoutMs ?? 10_000;
    this.#client = createPublicClient({ transport: http(config.rpcUrl, { retryCount, timeout: timeoutMs }) });
    this.#usdcReader = new UsdcReader(config.rpcUrl, this.#usdc, { retryCount, timeoutMs });
  }

  async signTransfer(to: Address, amount: bigint, nonce: number, fees: FeeQuote): Promise<SignedTransfer> {
    if (amount <= 0n) throw new Error(`custody: transfer amount must be positive, got ${amount}`);
    const rawTx = await this.#account.signTransaction({
      type: 'eip1559',
      chainId: this.#chainId,
      nonce,
      to: this.#usdc,
      value: 0n,
      data: encodeFunctionData({ abi: usdcAbi, functionName: 'transfer', args: [getAddress(to), amount] }),
      gas: this.#gasLimit,
      maxFeePerGas: fees.maxFeePerGas,
      maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
    });
    return { rawTx, txHash: keccak256(rawTx) };
  }

  async broadcast(rawTx: Hex): Promise<void> {
    try {
      await this.#client.sendRawTransaction({ serializedTransaction: rawTx });
    } catch (err) {
      if (!DUPLICATE_ANSWER.test(errorText(err))) throw err;
      const txHash = keccak256(rawTx);
      if (await this.#isKnown(txHash)) return;
      throw new BroadcastRejectedError(
        `custody: node refused ${txHash} (${describeChainError(err)}) and does not know it: its nonce is taken by another transaction`,
        txHash,
      );
    }
  }

  async receipt(txHash: Hash): Promise<TransferReceipt | null> {
    try {
      const r = await this.#client.getTransactionReceipt({ hash: txHash });
      return { status: r.status, blockNumber: r.blockNumber, gasUsed: r.gasUsed };
    } catch (err) {
      if (err instanceof TransactionReceiptNotFoundError) return null;
      throw err;
    }
  }

  async confirmations(blockNumber: bigint): Promise<number> {
    const latest = await this.#client.getBlockNumber({ cacheTime: 0 });
    return latest < blockNumber ? 0 : Number(latest - blockNumber + 1n);
  }

  async pendingNonce(): Promise<number> {
    return this.#client.getTransactionCount({ address: this.address, blockTag: 'pending' });
  }

  /** Through the plain ERC-20 reader (chain/usdc.ts), with this wallet's timeout and retries. */
  async usdcBalance(): Promise<bigint> {
    return this.#usdcReader.balanceOf(this.address);
  }

  /**
   * EIP-1559 fees: tip = the node's suggestion; cap = 2 × latest base fee + tip, so the
   * transaction stays includable while the base fee doubles (it is never re-signed).
   */
  async feeQuote(): Promise<FeeQuote> {
    const [block, tip] = await Promise.all([
      this.#client.getBlock({ blockTag: 'latest' }),
      this.#client.estimateMaxPriorityFeePerGas(),
    ]);
    const baseFee = block.baseFeePerGas ?? 0n;
    return { maxFeePerGas: baseFee * 2n + tip, maxPriorityFeePerGas: tip };
  }

  async #isKnown(txHash: Hash): Promise<boolean> {
    try {
      await this.#client.getTransaction({ hash: txHash });
      return true;
    } catch (err) {
      if (err instanceof TransactionNotFoundError) return false;
      throw err;
    }
  }

  /** Never print the key: only the address shows in logs and inspection. */
  toJSON(): { address: Address } {
    return { address: this.address };
  }
}

/** Full text of an error and its causes (viem puts the node's answer in `details`). */
function errorText(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 6 && e; i++) {
    if (e instanceof Error) parts.push(e.message);
    if (e instanceof BaseError && e.details) parts.push(e.details);
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(' | ');
}

/**
 * A short, log-safe description of a chain error: viem's short message and the node's answer,
 * with URLs removed (RPC URLs often carry API keys) and capped in length.
 */
export function describeChainError(err: unknown, maxLength = 300): string {
  let text: string;
  if (err instanceof BaseError) text = err.details ? `${err.shortMessage} (${err.details})` : err.shortMessage;
  else if (err instanceof Error) text = err.message;
  else text = String(err);
  text = text.replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, '<url>').replace(/\s+/g, ' ').trim();
  return text.length > maxLength ? `${text.slice(0, maxLength - 1)}…` : text;
}
