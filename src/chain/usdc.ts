import { createPublicClient, http, parseAbi, parseAbiItem, type Address, type Hex, type PublicClient } from 'viem';

/**
 * Plain reads of the USDC token (ERC-20 + EIP-3009) on any chain: balances, whether an
 * authorization was used, and the transaction that used it.
 */
const usdcAbi = parseAbi([
  'function balanceOf(address account) view returns (uint256)',
  'function authorizationState(address authorizer, bytes32 nonce) view returns (bool)',
]);
const authorizationUsed = parseAbiItem('event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)');

export class UsdcReader {
  private readonly client: PublicClient;

  constructor(
    rpcUrl: string,
    readonly usdc: Address,
  ) {
    this.client = createPublicClient({ transport: http(rpcUrl), cacheTime: 0 });
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
