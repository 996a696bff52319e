import { randomBytes } from 'node:crypto';
import { count, eq, inArray } from 'drizzle-orm';
import { createTestClient, http, publicActions, toHex, type Address, type Hash, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { ManualClock } from '../../src/clock.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc, type DevChain } from '../../src/chain/dev/devchain.js';
import { withTransaction, type Db } from '../../src/db/client.js';
import { agents, chainTransfers, tasks, type ChainTransferRow } from '../../src/db/schema.js';
import {
  CustodialEscrowWallet,
  type EscrowCustody,
  type FeeQuote,
  type SignedTransfer,
  type TransferReceipt,
} from '../../src/escrow/custody.js';
import { SettlementWorker, type SettlementWorkerOptions } from '../../src/escrow/settlement-worker.js';
import { recordEscrowFunding } from '../../src/ledger/ledger.js';
import { newId } from '../../src/ids.js';

export const ESCROW = ANVIL_ACCOUNTS[DEV_ROLES.escrow]!;
export const FEE_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!;
export const T0 = new Date('2026-11-21T12:00:00.000Z');

export const randomAddress = (): Address => privateKeyToAccount(toHex(randomBytes(32))).address;

export function newClock(): ManualClock {
  return new ManualClock(T0);
}

export function escrowCustody(chain: Pick<DevChain, 'rpcUrl' | 'chainId' | 'usdc'>, rpcUrl = chain.rpcUrl): CustodialEscrowWallet {
  return new CustodialEscrowWallet({ rpcUrl, chainId: chain.chainId, usdc: chain.usdc, privateKey: ESCROW.privateKey });
}

/** viem test client on the dev chain (mine blocks, read nonces, send raw transactions). */
export function chainClient(rpcUrl: string) {
  return createTestClient({ mode: 'anvil', transport: http(rpcUrl, { retryCount: 0 }) }).extend(publicActions);
}

/** Transactions the escrow wallet has had mined (its latest nonce). */
export async function minedNonce(rpcUrl: string, address: Address = ESCROW.address): Promise<number> {
  return chainClient(rpcUrl).getTransactionCount({ address, blockTag: 'latest' });
}

let agentId: string | null = null;

async function ensureAgent(db: Db, clock: ManualClock): Promise<string> {
  if (agentId) {
    const [row] = await db.select({ id: agents.id }).from(agents).where(eq(agents.id, agentId));
    if (row) return agentId;
  }
  agentId = newId('agent');
  const owner = randomAddress().toLowerCase();
  await db.insert(agents).values({
    id: agentId,
    ownerAddress: owner,
    payoutAddress: owner,
    name: 'Payout test agent',
    baseRate: 1n,
    createdAt: clock.now(),
    updatedAt: clock.now(),
  });
  return agentId;
}

export interface FundedTask {
  id: string;
  payer: Address;
  amount: bigint;
}

/**
 * A task whose escrow holds `amount`: the task row (in progress, escrow held), the ledger's
 * `escrow_in` movement and, when a chain is given, the same USDC minted to the escrow wallet.
 */
export async function fundedTask(
  db: Db,
  clock: ManualClock,
  amount: bigint,
  chain?: Pick<DevChain, 'rpcUrl' | 'usdc'>,
): Promise<FundedTask> {
  const agent = await ensureAgent(db, clock);
  const id = newId('task');
  const payer = randomAddress();
  const now = clock.now();
  await withTransaction(db, async (tx) => {
    await tx.insert(tasks).values({
      id,
      agentId: agent,
      payerAddress: payer.toLowerCase(),
      description: 'payout test',
      budgetAmount: amount,
      currency: 'USDC',
      chain: 'base',
      timeoutSeconds: 600,
      status: 'in_progress',
      escrowStatus: 'held',
      escrowAddress: ESCROW.address.toLowerCase(),
      fundedAmount: amount,
      expiresAt: new Date(now.getTime() + 3_600_000),
      fundedAt: now,
      createdAt: now,
      updatedAt: now,
    });
    await recordEscrowFunding(tx, clock, { taskId: id, amount });
  });
  if (chain) await mintUsdc(chain, ESCROW.address, amount);
  return { id, payer, amount };
}

export async function transferRow(db: Db, id: string): Promise<ChainTransferRow> {
  const [row] = await db.select().from(chainTransfers).where(eq(chainTransfers.id, id));
  if (!row) throw new Error(`no transfer ${id}`);
  return row;
}

export async function transferCount(db: Db): Promise<number> {
  const [row] = await db.select({ n: count() }).from(chainTransfers);
  return row?.n ?? 0;
}

export function worker(
  db: Db,
  clock: ManualClock,
  custody: EscrowCustody,
  overrides: Partial<SettlementWorkerOptions> = {},
): SettlementWorker {
  return new SettlementWorker({
    db,
    clock,
    custody,
    confirmations: 1,
    leaseMs: 30_000,
    maxAttempts: 3,
    backoffBaseMs: 1_000,
    ...overrides,
  });
}

/**
 * A custody that "crashes" the process at one point: the call never returns (until `release()`,
 * which makes it throw, as a dead process would never write anything afterwards).
 * `before-broadcast`: dies with the transaction signed and stored but never sent.
 * `after-broadcast`: the node got the bytes, the process died before recording it.
 * Everything else goes to the real custody on the real chain.
 */
export class CrashingCustody implements EscrowCustody {
  readonly address: Address;
  readonly broadcasts: Hex[] = [];
  private releaseGate!: () => void;
  private readonly gate = new Promise<void>((resolve) => {
    this.releaseGate = resolve;
  });

  constructor(
    private readonly inner: EscrowCustody,
    private readonly crashAt: 'before-broadcast' | 'after-broadcast',
  ) {
    this.address = inner.address;
  }

  release(): void {
    this.releaseGate();
  }

  async broadcast(rawTx: Hex): Promise<void> {
    this.broadcasts.push(rawTx);
    if (this.crashAt === 'after-broadcast') await this.inner.broadcast(rawTx);
    await this.gate;
    throw new Error('simulated crash: this process is gone');
  }

  signTransfer(to: Address, amount: bigint, nonce: number, fees: FeeQuote): Promise<SignedTransfer> {
    return this.inner.signTransfer(to, amount, nonce, fees);
  }
  receipt(txHash: Hash): Promise<TransferReceipt | null> {
    return this.inner.receipt(txHash);
  }
  confirmations(blockNumber: bigint): Promise<number> {
    return this.inner.confirmations(blockNumber);
  }
  pendingNonce(): Promise<number> {
    return this.inner.pendingNonce();
  }
  usdcBalance(): Promise<bigint> {
    return this.inner.usdcBalance();
  }
  feeQuote(): Promise<FeeQuote> {
    return this.inner.feeQuote();
  }
}

/** Signs through `signer` (a working node) but sends and reads receipts through `network` (maybe down). */
export function splitCustody(signer: EscrowCustody, network: EscrowCustody): EscrowCustody {
  return {
    address: signer.address,
    signTransfer: (to, amount, nonce, fees) => signer.signTransfer(to, amount, nonce, fees),
    pendingNonce: () => signer.pendingNonce(),
    feeQuote: () => signer.feeQuote(),
    broadcast: (rawTx) => network.broadcast(rawTx),
    receipt: (hash) => network.receipt(hash),
    confirmations: (bn) => network.confirmations(bn),
    usdcBalance: () => network.usdcBalance(),
  };
}

/** Transfers not yet confirmed or failed. */
export async function activeTransfers(db: Db): Promise<number> {
  const [row] = await db
    .select({ n: count() })
    .from(chainTransfers)
    .where(inArray(chainTransfers.status, ['pending', 'signed', 'sent']));
  return row?.n ?? 0;
}

/**
 * Runs the workers (concurrently, round after round) until no transfer is active. A receipt can
 * lag the broadcast by a moment even on an automining anvil, as it does on a real chain, so
 * a transfer may take more than one round. Returns the sum of what the runs advanced.
 */
export async function runUntilSettled(workers: SettlementWorker | SettlementWorker[], db: Db, timeoutMs = 15_000): Promise<number> {
  const list = Array.isArray(workers) ? workers : [workers];
  const deadline = Date.now() + timeoutMs;
  let total = 0;
  for (;;) {
    const counts = await Promise.all(list.map((w) => w.runOnce()));
    total += counts.reduce((a, b) => a + b, 0);
    if ((await activeTransfers(db)) === 0) return total;
    if (Date.now() > deadline) throw new Error(`transfers still active after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Waits until the node has a receipt for `hash`. */
export async function waitForReceipt(custody: EscrowCustody, hash: Hash, timeoutMs = 10_000): Promise<TransferReceipt> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const receipt = await custody.receipt(hash);
    if (receipt) return receipt;
    if (Date.now() > deadline) throw new Error(`no receipt for ${hash} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A TCP port nothing listens on (for an RPC outage). */
export async function closedPortUrl(): Promise<string> {
  const { pickFreePort } = await import('../../src/chain/dev/devchain.js');
  return `http://127.0.0.1:${await pickFreePort()}`;
}
