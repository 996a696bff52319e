import type { Hex } from 'viem';
import { UsdcReader } from '../chain/usdc.js';
import { chainTarget, resolveWallets } from '../chain/wallets.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import { PAYOUT_PENDING, PAYOUT_PENDING_FEE } from '../ledger/accounts.js';
import type { WalletProbe } from '../ledger/reconcile.js';
import { CustodialEscrowWallet, type EscrowCustody } from './custody.js';
import { SettlementWorker, type SettlementWorkerLog } from './settlement-worker.js';

/** The chain side of the escrow: the custody wallets, the fee wallet's balance, the settlement workers. */
export interface EscrowRuntime {
  custody: EscrowCustody;
  /** The fee wallet as a custody, when its key is configured (it sends refunds of call fees). */
  feeCustody: EscrowCustody | undefined;
  feeWallet: WalletProbe;
  /** Plain reads of the token (balances, EIP-3009 authorization state). */
  usdc: UsdcReader;
  /** The escrow wallet's settlement worker. */
  createWorker(db: Db, clock: Clock, log?: SettlementWorkerLog): SettlementWorker;
  /** One settlement worker per wallet the service sends from (escrow, and fee when its key is set). */
  createWorkers(db: Db, clock: Clock, log?: SettlementWorkerLog): SettlementWorker[];
}

export function createEscrowRuntime(config: Config, rpcUrl: string): EscrowRuntime {
  const target = chainTarget(config);
  const wallets = resolveWallets(config);
  const custodyOf = (privateKey: Hex) => new CustodialEscrowWallet({ rpcUrl, chainId: target.chainId, usdc: target.usdc, privateKey });
  const custody = custodyOf(wallets.escrowKey);
  const feeCustody = wallets.feeKey ? custodyOf(wallets.feeKey) : undefined;
  const usdc = new UsdcReader(rpcUrl, target.usdc);
  const workerFor = (wallet: EscrowCustody, pendingAccount: string, db: Db, clock: Clock, log?: SettlementWorkerLog) =>
    new SettlementWorker({
      db,
      clock,
      custody: wallet,
      pendingAccount,
      confirmations: config.CHAIN_CONFIRMATIONS,
      leaseMs: config.SETTLEMENT_LEASE_MS,
      maxAttempts: config.SETTLEMENT_MAX_ATTEMPTS,
      backoffBaseMs: config.SETTLEMENT_BACKOFF_MS,
      ...(log ? { log } : {}),
    });
  return {
    custody,
    feeCustody,
    usdc,
    feeWallet: feeCustody ?? { address: wallets.feeAddress, usdcBalance: () => usdc.balanceOf(wallets.feeAddress) },
    createWorker: (db, clock, log) => workerFor(custody, PAYOUT_PENDING, db, clock, log),
    createWorkers: (db, clock, log) => [
      workerFor(custody, PAYOUT_PENDING, db, clock, log),
      ...(feeCustody ? [workerFor(feeCustody, PAYOUT_PENDING_FEE, db, clock, log)] : []),
    ],
  };
}
