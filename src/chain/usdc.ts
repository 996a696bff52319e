import { createPublicClient, http, parseAbi, parseAbiItem, type Address, type Hex, type PublicClient } from 'viem';

/**
 * The production side of the USDC token (ERC-20 + EIP-3009) on any chain: the few functions the
 * service calls, written by hand (the dev chain's full test-token ABI lives in ./dev/), and plain
 * reads: balances, whether an authorization was used, and the transaction that used it.
 */
export const usdcAbi = parseAbi([
  'function balanceOf(address account) view returns (uint256)',
  'function transfer(address to, uint256 value) returns (bool)',
  'function authorizationState(address authorizer, bytes32 nonce) view returns (bool)',
]);
const authorizationUsed = parseAbiItem('event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)');

export interface UsdcReaderOptions {
  /** viem transport retries per RPC call (default: viem's). */
  retryCount?: number;
  /** RPC request timeout in ms (default: viem's). */
  timeoutMs?: number;
}

export class UsdcReader {
  private readonly client: PublicClient;

  constructor(
    rpcUrl: string,
    readonly usdc: Address,
    opts: UsdcReaderOptions = {},
  ) {
    const transport = http(rpcUrl, {
      ...(opts.retryCount !== undefined ? { retryCount: opts.retryCount } : {}),
      ...(opts.timeoutMs !== undefined ? { timeout: opts.timeoutMs } : {}),
    });
    this.client = createPublicClient({ transport, cacheTime: 0 });
  }

  balanceOf(account: Address): Promise<bigint> {
    return this.client.readContract({ address: this.usdc, abi: usdcAbi, functionName: 'balanceOf', args: [account] });
  }

  /** True once an EIP-3009 authorization (authorizer, nonce) was used (or cancelled) on chain. */
  authorizationState(authorizer: Address, nonce: Hex): Promise<boolean> {
    return this.client.readContract({ address: this.usdc, abi: usdcAbi, functionName: 'authorizationState', args: [authorizer, nonce] });
  }

  /**
   * The transaction that used the authorization, from its AuthorizationUsed event in the last
   * `lookbackBlocks` blocks (null when not found there).
   */
  async authorizationTx(authorizer: Address, nonce: Hex, lookbackBlocks = 20_000n): Promise<Hex | null> {
    const latest = await this.client.getBlockNumber({ cacheTime: 0 });
    const fromBlock = latest > lookbackBlocks ? latest - lookbackBlocks : 0n;
    const logs = await this.client.getLogs({ address: this.usdc, event: authorizationUsed, args: { authorizer, nonce }, fromBlock, toBlock: 'latest' });
    return logs[0]?.transactionHash ?? null;
  }
}
