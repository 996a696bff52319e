import { UsdcReader } from '../chain/usdc.js';
import { chainTarget, resolveWallets } from '../chain/wallets.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/client.js';
import type { WalletProbe } from '../ledger/reconcile.js';
import { CustodialEscrowWallet, type EscrowCustody } from './custody.js';
import { SettlementWorker, type SettlementWorkerLog } from './settlement-worker.js';

/** The chain side of the escrow: the custody wallet, the fee wallet's balance, the settlement worker. */
export interface EscrowRuntime {
  custody: EscrowCustody;
  feeWallet: WalletProbe;
  /** Plain reads of the token (balances, EIP-3009 authorization state). */
  usdc: UsdcReader;
  createWorker(db: Db, clock: Clock, log?: SettlementWorkerLog): SettlementWorker;
}

export function createEscrowRuntime(config: Config, rpcUrl: string): EscrowRuntime {
  const target = chainTarget(config);
  const wallets = resolveWallets(config);
  const custody = new CustodialEscrowWallet({ rpcUrl, chainId: target.chainId, usdc: target.usdc, privateKey: wallets.escrowKey });
  const usdc = new UsdcReader(rpcUrl, target.usdc);
  return {
    custody,
    usdc,
    feeWallet: { address: wallets.feeAddress, usdcBalance: () => usdc.balanceOf(wallets.feeAddress) },
    createWorker: (db, clock, log) =>
      new SettlementWorker({
        db,
        clock,
        custody,
        confirmations: config.CHAIN_CONFIRMATIONS,
        leaseMs: config.SETTLEMENT_LEASE_MS,
        maxAttempts: config.SETTLEMENT_MAX_ATTEMPTS,
        backoffBaseMs: config.SETTLEMENT_BACKOFF_MS,
        ...(log ? { log } : {}),
      }),
  };
}
