import { inspect } from 'node:util';
import { parseTransaction, type Hex } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { BroadcastRejectedError, CustodialEscrowWallet, describeChainError } from '../../src/escrow/custody.js';
import { ESCROW, chainClient, closedPortUrl, escrowCustody, minedNonce, randomAddress, waitForReceipt } from './support.js';

let chain: DevChain;
let custody: CustodialEscrowWallet;

beforeAll(async () => {
  chain = await startDevChain({ silent: true, fundIndices: [4, 5, 6, 7, 8, 9] });
  custody = escrowCustody(chain);
  await mintUsdc(chain, ESCROW.address, 50_000_000n);
});
afterAll(() => chain.stop());

async function signNext(to = randomAddress(), amount = 1_000n, nonce?: number) {
  const fees = await custody.feeQuote();
  return custody.signTransfer(to, amount, nonce ?? (await custody.pendingNonce()), fees);
}

describe('CustodialEscrowWallet', () => {
  it('signs an EIP-1559 USDC transfer with the given nonce, gas, fees and chain id, without sending it', async () => {
    const to = randomAddress();
    const nonce = await custody.pendingNonce();
    const fees = await custody.feeQuote();
    expect(fees.maxFeePerGas).toBeGreaterThan(fees.maxPriorityFeePerGas);
    const { rawTx, txHash } = await custody.signTransfer(to, 1_234n, nonce, fees);
    const tx = parseTransaction(rawTx);
    expect(tx).toMatchObject({ type: 'eip1559', chainId: 8453, nonce, gas: 100_000n, to: chain.usdc.toLowerCase(), ...fees });
    expect(tx.data?.slice(0, 10)).toBe('0xa9059cbb'); // transfer(address,uint256)
    expect(txHash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await custody.receipt(txHash)).toBeNull();
    expect(await custody.pendingNonce()).toBe(nonce);
  });

  it('broadcast is idempotent: the same bytes again, before and after mining, are not an error', async () => {
    const to = randomAddress();
    const before = await minedNonce(chain.rpcUrl);
    const { rawTx, txHash } = await signNext(to, 2_000n);
    await custody.broadcast(rawTx);
    await custody.broadcast(rawTx);
    const receipt = await waitForReceipt(custody, txHash);
    expect(receipt).toMatchObject({ status: 'success' });
    expect(receipt!.gasUsed).toBeGreaterThan(30_000n);
    await custody.broadcast(rawTx);
    expect(await usdcBalance(chain.rpcUrl, to)).toBe(2_000n);
    expect(await minedNonce(chain.rpcUrl)).toBe(before + 1);
    expect(await custody.confirmations(receipt!.blockNumber)).toBe(1);
    await chainClient(chain.rpcUrl).mine({ blocks: 2 });
    expect(await custody.confirmations(receipt!.blockNumber)).toBe(3);
  });

  it('refuses bytes whose nonce another transaction has taken', async () => {
    const nonce = await custody.pendingNonce();
    const first = await signNext(randomAddress(), 1n, nonce);
    const rival = await signNext(randomAddress(), 2n, nonce);
    await custody.broadcast(first.rawTx);
    const error = await custody.broadcast(rival.rawTx).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BroadcastRejectedError);
    expect((error as BroadcastRejectedError).txHash).toBe(rival.txHash);
    expect(await custody.receipt(rival.txHash)).toBeNull();
  });

  it('reads the wallet’s USDC; an unreachable node fails with a short message and no URL', async () => {
    expect(await custody.usdcBalance()).toBe(await usdcBalance(chain.rpcUrl, ESCROW.address));
    const down = new CustodialEscrowWallet({ rpcUrl: await closedPortUrl(), chainId: 8453, usdc: chain.usdc, privateKey: ESCROW.privateKey });
    const error = await down.pendingNonce().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    const text = describeChainError(error);
    expect(text).not.toMatch(/127\.0\.0\.1|http:/);
    expect(text.length).toBeLessThanOrEqual(300);
  });

  it('never shows its key', () => {
    const key = ESCROW.privateKey.slice(2) as Hex;
    expect(JSON.stringify(custody)).toBe(JSON.stringify({ address: ESCROW.address }));
    expect(inspect(custody, { depth: 10, showHidden: true })).not.toContain(key);
    expect(Object.values(custody).join(' ')).not.toContain(key);
  });
});
