import { createTestClient, http, publicActions, walletActions } from 'viem';
import { base } from 'viem/chains';

/** An anvil test client (setCode, mine, unlocked-account sends) with public and wallet actions. */
export function createDevClient(rpcUrl: string) {
  return createTestClient({ chain: base, mode: 'anvil', transport: http(rpcUrl, { retryCount: 0 }) })
    .extend(publicActions)
    .extend(walletActions);
}

export type DevClient = ReturnType<typeof createDevClient>;

/** How often the dev helpers poll for a receipt (the facilitator too, on the embedded chain). */
export { DEV_POLL_INTERVAL_MS } from '../constants.js';
