import { createPublicClient, erc20Abi, http } from 'viem';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintUsdc, startDevChain, type DevChain } from '../../src/chain/dev/devchain.js';
import { withTransaction, type Db } from '../../src/db/client.js';
import type { CustodialEscrowWallet } from '../../src/escrow/custody.js';
import { planRefund } from '../../src/escrow/outbox.js';
import { recordCallFee } from '../../src/ledger/ledger.js';
import { reconcile, type WalletProbe } from '../../src/ledger/reconcile.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { ESCROW, FEE_WALLET, escrowCustody, fundedTask, newClock, runUntilSettled, worker } from '../escrow/support.js';

let chain: DevChain;
let testDb: TestDatabase;
let db: Db;
let escrow: CustodialEscrowWallet;
let feeWallet: WalletProbe;
const clock = newClock();

beforeAll(async () => {
  [chain, testDb] = await Promise.all([startDevChain({ silent: true, fundIndices: [4, 5, 6, 7, 8, 9] }), createTestDatabase()]);
  db = testDb.database.db;
  escrow = escrowCustody(chain);
  const client = createPublicClient({ transport: http(chain.rpcUrl) });
  feeWallet = {
    address: FEE_WALLET.address,
    usdcBalance: () => client.readContract({ address: chain.usdc, abi: erc20Abi, functionName: 'balanceOf', args: [FEE_WALLET.address] }),
  };
});
afterAll(async () => {
  await chain.stop();
  await testDb.destroy();
});

describe('reconcile', () => {
  it('agrees on a fresh chain and an empty ledger', async () => {
    const books = await reconcile(db, { escrow, feeWallet });
    expect(books).toEqual({
      ledger: { ok: true, total: 0n, unbalancedMovements: [] },
      wallets: [
        { wallet: 'escrow', address: ESCROW.address, onChain: 0n, ledger: 0n, difference: 0n, inFlight: 0n, incoming: 0n },
        { wallet: 'fee', address: FEE_WALLET.address, onChain: 0n, ledger: 0n, difference: 0n, inFlight: 0n, incoming: 0n },
      ],
      ok: true,
    });
  });

  it('follows funding, call fees and a confirmed refund; finds money the ledger does not know', async () => {
    const task = await fundedTask(db, clock, 3_000_000n, chain);
    await mintUsdc(chain, FEE_WALLET.address, 1_000n);
    await recordCallFee(db, clock, { amount: 1_000n, paymentId: 'pay_fee' });
    let books = await reconcile(db, { escrow, feeWallet });
    expect(books.ok).toBe(true);
    expect(books.wallets.map((w) => [w.wallet, w.onChain, w.ledger])).toEqual([
      ['escrow', 3_000_000n, 3_000_000n],
      ['fee', 1_000n, 1_000n],
    ]);

    await withTransaction(db, (tx) => planRefund(tx, clock, { task, refund: 3_000_000n }));
    await runUntilSettled(worker(db, clock, escrow), db);
    books = await reconcile(db, { escrow, feeWallet });
    expect(books.ok).toBe(true);
    expect(books.wallets[0]).toMatchObject({ onChain: 0n, ledger: 0n });

    // USDC sent to the fee wallet outside any x402 payment: the books say so
    await mintUsdc(chain, FEE_WALLET.address, 7n);
    books = await reconcile(db, { escrow, feeWallet });
    expect(books.ok).toBe(false);
    expect(books.ledger.ok).toBe(true);
    expect(books.wallets[1]).toMatchObject({ wallet: 'fee', onChain: 1_007n, ledger: 1_000n, difference: 7n });
    expect(books.wallets[0]!.difference).toBe(0n);
    // without the fee wallet only the escrow wallet is checked
    expect((await reconcile(db, { escrow })).ok).toBe(true);
  });
});
