import { eip3009ABI } from '@x402/evm';
import { decodeEventLog, encodeFunctionData, getAddress, parseAbi, parseAbiItem, parseSignature, type Address, type Hex, type TransactionReceipt } from 'viem';
import { MULTICALL3 } from '../chain/constants.js';
import type { OperatorSender } from '../chain/operator.js';
import { withTransaction, type Db } from '../db/client.js';
import type { PaymentRow } from '../db/schema.js';
import { failpoint } from '../failpoints.js';
import { newId } from '../ids.js';
import { describeError } from '../net/redact.js';
import type { WorkerLog } from '../queue/index.js';
import { plainEip3009, type PlainEip3009 } from './fast-exact.js';
import type { PaymentLifecycle } from './lifecycle.js';
import type { AuthorizationProbe } from './recovery.js';

/**
 * The batch settler of deferred micro-fees (worker role; see micro-fees.ts). Each run leases up to
 * `batchSize` deferred payments, the soonest to expire first, and settles their EIP-3009
 * authorizations in one transaction from the operator wallet: Multicall3 `aggregate3` of
 * `transferWithAuthorization` calls, each allowed to fail on its own. Then, from the receipt:
 * - an authorization used in this transaction: collected (booked, receivable → treasury);
 * - one used earlier by a transaction that paid the fee wallet this fee (an earlier batch of ours
 *   whose run crashed before booking): collected with that transaction;
 * - one that expired before it could be settled: written off, our loss, the payer owes nothing;
 * - any other failure the token still names when asked alone (the payer's balance, its signature,
 *   its nonce spent elsewhere): defaulted, the payer is in arrears and refused until it pays;
 * - one that failed in the batch but that the token would take now: left deferred for the next run.
 * A batch's gas limit is set, never estimated (`batchGasLimit`).
 *
 * Crash-safe by the token's own rule: an authorization moves money once. A run killed anywhere
 * leaves its rows `deferred` under a lease that runs out; the next run sends them again, the used
 * ones fail in the batch and are found where they were used. All outcomes of a batch are booked
 * in one transaction.
 */
export interface MicroFeeSettlerOptions {
  db: Db;
  lifecycle: PaymentLifecycle;
  operator: OperatorSender;
  usdc: Address;
  feeAddress: Address;
  chain: AuthorizationProbe;
  batchSize: number;
  /** How long a run holds its rows (a crashed run's rows are taken again after it). */
  leaseMs: number;
  log?: WorkerLog;
  /** The gas limit of a batch of n authorizations (default `batchGasLimit`; tests starve it). */
  gasLimit?: (authorizations: number) => bigint;
  /** Told which payers' balances changed (their cached balance is stale now). */
  onSettled?: (payers: string[]) => void;
}

export interface MicroFeeRun {
  collected: number;
  defaulted: number;
  expired: number;
  /** Failed in the batch though the token would take them now: left deferred for the next run. */
  retry: number;
  txHash: Hex | null;
  gasUsed: bigint;
}

const aggregate3Abi = parseAbi([
  'function aggregate3((address target, bool allowFailure, bytes callData)[] calls) payable returns ((bool success, bytes returnData)[] returnData)',
]);
const authorizationUsed = parseAbiItem('event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)');
const transferEvent = parseAbiItem('event Transfer(address indexed from, address indexed to, uint256 value)');

type Outcome = { kind: 'collected'; txHash: string } | { kind: 'defaulted' | 'expired'; reason: string } | { kind: 'retry'; reason: string };

/**
 * The gas limit of a batch: never estimated. With every inner call allowed to fail, an estimate
 * finds the least gas at which the *batch* succeeds, which can be gas at which its transfers run
 * out: they would fail for our want of gas and read as the payers' failures. A
 * `transferWithAuthorization` uses about 35–60 k gas (cold slots, signature recovery); only the
 * gas used is paid.
 */
export function batchGasLimit(authorizations: number): bigint {
  return 80_000n + 100_000n * BigInt(authorizations);
}

export class MicroFeeSettler {
  readonly owner = newId('feebatch');

  constructor(private readonly opts: MicroFeeSettlerOptions) {}

  /** Runs batches while they come full (a backlog), at most `maxBatches`. */
  async drain(maxBatches = 20): Promise<number> {
    let settled = 0;
    for (let i = 0; i < maxBatches; i++) {
      const run = await this.runOnce();
      const n = run.collected + run.defaulted + run.expired;
      settled += n;
      if (n + run.retry < this.opts.batchSize || run.retry > 0) break;
    }
    return settled;
  }

  async runOnce(): Promise<MicroFeeRun> {
    const { lifecycle, operator, log } = this.opts;
    const run: MicroFeeRun = { collected: 0, defaulted: 0, expired: 0, retry: 0, txHash: null, gasUsed: 0n };
    const rows = await lifecycle.takeDeferred(this.owner, this.opts.batchSize, this.opts.leaseMs);
    if (rows.length === 0) return run;
    const calls = rows.filter((row) => authorizationOf(row) !== undefined);
    let receipt: TransactionReceipt | undefined;
    if (calls.length > 0) {
      try {
        run.txHash = await operator.send({
          to: MULTICALL3,
          data: batchCallData(calls),
          gas: (this.opts.gasLimit ?? batchGasLimit)(calls.length),
        });
      } catch (err) {
        // Nothing was sent (or the node refused it): the rows stay deferred and are taken again after the lease.
        log?.error({ cause: describeError(err), payments: rows.length }, 'micro-fees: the batch settlement could not be sent; retried after the lease');
        return run;
      }
      await lifecycle.markBatchSent(
        rows.map((r) => r.id),
        this.owner,
        run.txHash,
      );
      failpoint('microfee:after-send');
      receipt = await operator.client.waitForTransactionReceipt({ hash: run.txHash, pollingInterval: operator.receiptPollMs });
      run.gasUsed = receipt.gasUsed;
      if (receipt.status !== 'success') {
        // A reverted transaction moved nothing: the rows are free for the next run at once.
        log?.error({ tx: run.txHash, payments: rows.length }, 'micro-fees: the batch transaction reverted; tried again next run');
        await withTransaction(this.opts.db, async (tx) => {
          for (const row of rows) await lifecycle.releaseDeferred(tx, row.id, this.owner);
        });
        run.retry = rows.length;
        return run;
      }
    }
    const usedHere = receipt ? this.usedIn(receipt) : new Set<string>();
    const blockTime = receipt ? (await operator.client.getBlock({ blockNumber: receipt.blockNumber })).timestamp : BigInt(Math.floor(Date.now() / 1000));
    const outcomes = new Map<string, Outcome>();
    for (const row of rows) outcomes.set(row.id, await this.outcomeOf(row, usedHere, run.txHash, blockTime));
    failpoint('microfee:after-receipt');
    await withTransaction(this.opts.db, async (tx) => {
      const collected = new Map<string, string[]>(); // by the transaction that moved them
      for (const row of rows) {
        const outcome = outcomes.get(row.id)!;
        if (outcome.kind === 'collected') collected.set(outcome.txHash, [...(collected.get(outcome.txHash) ?? []), row.id]);
        else if (outcome.kind === 'retry') await lifecycle.releaseDeferred(tx, row.id, this.owner);
        else await lifecycle.uncollected(tx, row.id, this.owner, { defaulted: outcome.kind === 'defaulted', reason: outcome.reason });
      }
      for (const [txHash, ids] of collected) await lifecycle.collect(tx, ids, this.owner, txHash);
    });
    for (const outcome of outcomes.values()) run[outcome.kind]++;
    this.opts.onSettled?.([...new Set(rows.map((r) => r.payerAddress))]);
    if (run.defaulted > 0) log?.warn({ tx: run.txHash, defaulted: run.defaulted }, 'micro-fees: authorizations failed at settlement; their payers are in arrears');
    log?.info({ tx: run.txHash, collected: run.collected, defaulted: run.defaulted, expired: run.expired, gas: run.gasUsed.toString() }, 'micro-fees: batch settled');
    return run;
  }

  /** `authorizer:nonce` of every authorization the token used in this transaction. */
  private usedIn(receipt: TransactionReceipt): Set<string> {
    const used = new Set<string>();
    for (const entry of receipt.logs) {
      if (entry.address.toLowerCase() !== this.opts.usdc.toLowerCase()) continue;
      try {
        const event = decodeEventLog({ abi: [authorizationUsed], data: entry.data, topics: entry.topics });
        used.add(`${event.args.authorizer.toLowerCase()}:${event.args.nonce.toLowerCase()}`);
      } catch {
        // another event of the token
      }
    }
    return used;
  }

  private async outcomeOf(row: PaymentRow, usedHere: Set<string>, txHash: Hex | null, blockTime: bigint): Promise<Outcome> {
    const auth = authorizationOf(row);
    if (!auth) return { kind: 'defaulted', reason: 'the stored payment carries no plain EIP-3009 authorization' };
    const payer = getAddress(auth.authorization.from);
    const nonce = auth.authorization.nonce as Hex;
    if (txHash && usedHere.has(`${payer.toLowerCase()}:${nonce.toLowerCase()}`)) return { kind: 'collected', txHash };
    if (await this.opts.chain.authorizationState(payer, nonce)) {
      const earlier = await this.opts.chain.authorizationTx(payer, nonce);
      if (earlier && (await this.paidUs(earlier, payer, row.amount))) return { kind: 'collected', txHash: earlier };
      return { kind: 'defaulted', reason: 'the authorization was used or cancelled elsewhere before the service settled it' };
    }
    if (BigInt(auth.authorization.validBefore) <= blockTime) return { kind: 'expired', reason: 'the authorization expired before the service settled it' };
    const refused = await this.whyRefused(auth);
    // Not the payer's fault when the token would take it now (it failed in the batch for a reason of ours): tried again.
    return refused === undefined ? { kind: 'retry', reason: 'failed in the batch, but the token would take it now' } : { kind: 'defaulted', reason: refused };
  }

  /** True when transaction `hash` moved `amount` from `payer` into the fee wallet. */
  private async paidUs(hash: Hex, payer: Address, amount: bigint): Promise<boolean> {
    const receipt = await this.opts.operator.client.getTransactionReceipt({ hash });
    return receipt.logs.some((entry) => {
      if (entry.address.toLowerCase() !== this.opts.usdc.toLowerCase()) return false;
      try {
        const event = decodeEventLog({ abi: [transferEvent], data: entry.data, topics: entry.topics });
        return (
          event.args.from.toLowerCase() === payer.toLowerCase() &&
          event.args.to.toLowerCase() === this.opts.feeAddress.toLowerCase() &&
          event.args.value === amount
        );
      } catch {
        return false;
      }
    });
  }

  /** The token's reason for refusing the authorization now (the payment's failure reason); undefined when it would take it. */
  private async whyRefused(auth: PlainEip3009): Promise<string | undefined> {
    try {
      await this.opts.operator.client.call({ to: this.opts.usdc, data: transferCall(auth) });
      return undefined;
    } catch (err) {
      return `the authorization failed at settlement: ${describeError(err)}`.slice(0, 500);
    }
  }
}

/** One Multicall3 `aggregate3` of the rows' `transferWithAuthorization` calls, each allowed to fail on its own. */
function batchCallData(rows: readonly Pick<PaymentRow, 'payload' | 'asset'>[]): Hex {
  const calls = rows.flatMap((row) => {
    const auth = authorizationOf(row);
    return auth ? [{ target: getAddress(row.asset), allowFailure: true, callData: transferCall(auth) }] : [];
  });
  return encodeFunctionData({ abi: aggregate3Abi, functionName: 'aggregate3', args: [calls] });
}

function authorizationOf(row: Pick<PaymentRow, 'payload'>): PlainEip3009 | undefined {
  return plainEip3009((row.payload?.payload as { payload?: unknown } | undefined)?.payload);
}

function transferCall({ authorization: a, signature }: PlainEip3009): Hex {
  const { v, yParity, r, s } = parseSignature(signature);
  return encodeFunctionData({
    abi: eip3009ABI,
    functionName: 'transferWithAuthorization',
    args: [getAddress(a.from), getAddress(a.to), BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce as Hex, Number(v ?? BigInt(yParity! + 27)), r, s],
  });
}
