/**
 * The paying wallets: fresh keys holding minted test USDC and no ETH (x402 pays with EIP-3009
 * signatures; the facilitator pays the gas), each with the stock `@x402/fetch` client.
 *
 * A channel payer's client also has the stock `batch-settlement` client scheme of @x402/evm and
 * prefers it wherever the route offers it (every fixed-price route): those calls are paid by
 * vouchers over one channel (a deposit first, a top-up when it runs low). Funding (escrow, a
 * dynamic price) is offered `exact` only and stays `exact`. The client object, and with it the
 * channel state the scheme keeps in memory, lives as long as the soak: across every kill and
 * restart of the service.
 */
import { x402Client } from '@x402/core/client';
import { decodePaymentRequiredHeader } from '@x402/core/http';
import type { PaymentRequirements } from '@x402/core/types';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme, InMemoryClientChannelStorage } from '@x402/evm/batch-settlement/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { createPublicClient, http, type Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { BASE_NETWORK } from '../../src/chain/constants.js';
import { mintUsdc, type DevChain } from '../../src/chain/dev/devchain.js';

export const BATCH_SETTLEMENT = 'batch-settlement';

/** What a channel payer's client saw, summed over the soak. */
export interface ChannelClientStats {
  /** Requests that carried a batch-settlement payment (retries after a corrective 402 included). */
  paidAttempts: number;
  /** Of those, deposit payloads (the first payment of a channel, or a top-up). */
  deposits: number;
  /** Calls paid over the channel answered below 400 (the client's count of served calls). */
  served: number;
  /** Corrective 402s the scheme recovered from (it resynced and paid again in the same call). */
  resynced: number;
  /** Final 402 answers to a channel payment, by the x402 reason in the challenge. */
  refused: Record<string, number>;
  /**
   * The client's local channel state dropped by the soak after the service refused it with a
   * reason the stock scheme does not recover from (see `unrecoverable` below): the next call
   * rebuilds it from the contract (recoverChannel) and tops up. Each is a finding.
   */
  stateDropped: number;
}

export interface ChannelClient {
  scheme: BatchSettlementEvmScheme;
  /** The scheme's channel state (in memory, for the life of the soak). */
  storage: InMemoryClientChannelStorage;
  stats: ChannelClientStats;
  /** When the last call that paid over the channel ended (epoch ms; 0: none yet). */
  lastCallAt: number;
}

export interface Payer {
  account: PrivateKeyAccount;
  address: Address;
  /** USDC minted to it at the start (its balance before the soak). */
  start: bigint;
  pay: typeof fetch;
  /** Set for a payer that pays fixed-price calls over a batch-settlement channel. */
  channel?: ChannelClient;
}

/**
 * Refusals of a voucher that the stock client does not recover from by itself (its corrective
 * path handles only a cumulative-amount mismatch): its local channel state is stale. Seen: the
 * channel settler's idle refund returns the channel's remainder to the payer and drops the stored
 * channel; the client still believes in its old balance, signs the next voucher on it without a
 * top-up, and is refused `cumulative_exceeds_balance`, again and again (its state never changes).
 * The soak then drops the local state so that the next call reads the channel from the contract
 * (recoverChannel) and deposits anew; `stateDropped` counts it.
 */
const unrecoverable = new Set([
  'invalid_batch_settlement_evm_cumulative_exceeds_balance',
  'invalid_batch_settlement_evm_insufficient_balance',
  'invalid_batch_settlement_evm_channel_not_found',
]);

/**
 * The stock x402 client paying from `account`, spend cap lifted for escrow funding: the same as
 * `x402ClientFor` in test/helpers/paid.ts (which cannot be imported outside vitest: its module
 * graph reads vitest's injected context).
 */
export function x402ClientFor(account: PrivateKeyAccount): x402Client {
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  client.setSpendControls({ maxAmountPerPayment: false });
  return client;
}

/** `exact` and `batch-settlement`, the channel preferred wherever the route offers one. */
function channelPayingClient(account: PrivateKeyAccount, rpcUrl: string): { client: x402Client; channel: ChannelClient } {
  const prefer = (_version: number, accepts: PaymentRequirements[]) => accepts.find((a) => a.scheme === BATCH_SETTLEMENT) ?? accepts[0]!;
  const client = new x402Client(prefer);
  // On the same network as the channel scheme: a client looks a network up exactly before it tries
  // patterns, so an `eip155:*` exact registration would be hidden by the channel's (funding unpayable).
  registerExactEvmScheme(client, { signer: account, networks: [BASE_NETWORK] });
  const storage = new InMemoryClientChannelStorage();
  const scheme = new BatchSettlementEvmScheme(toClientEvmSigner(account, createPublicClient({ transport: http(rpcUrl), cacheTime: 0 })), { storage });
  client.register(BASE_NETWORK, scheme);
  client.setSpendControls({ maxAmountPerPayment: false });
  const stats: ChannelClientStats = { paidAttempts: 0, deposits: 0, served: 0, resynced: 0, refused: {}, stateDropped: 0 };
  return { client, channel: { scheme, storage, stats, lastCallAt: 0 } };
}

/** The batch-settlement payload a request carries, if any: its type and channel. */
function channelPayloadOf(request: Request): { type: string; channelId: string } | undefined {
  const header = request.headers.get('payment-signature');
  if (!header) return undefined;
  try {
    const decoded = JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as {
      accepted?: { scheme?: string };
      payload?: { type?: string; voucher?: { channelId?: string } };
    };
    if (decoded.accepted?.scheme !== BATCH_SETTLEMENT) return undefined;
    return { type: decoded.payload?.type ?? '?', channelId: decoded.payload?.voucher?.channelId ?? '' };
  } catch {
    return undefined;
  }
}

function reasonOf(res: Response): string {
  const header = res.headers.get('payment-required');
  if (!header) return `(no challenge, HTTP ${res.status})`;
  try {
    return decodePaymentRequiredHeader(header).error ?? '(no reason)';
  } catch {
    return '(unreadable challenge)';
  }
}

/**
 * `fetch` paying with the channel payer's client, recording what the client saw: every request
 * that carried a channel payment (and its type), what came back, and the corrective rounds.
 */
function channelFetch(client: x402Client, channel: ChannelClient): typeof fetch {
  const { stats } = channel;
  return async (input, init) => {
    // one wrapper per call: concurrent calls of the lane (several fundings at once) keep their own trail
    const mine: { type: string; channelId: string }[] = [];
    const recording: typeof fetch = async (i, n) => {
      const request = new Request(i, n);
      const paid = channelPayloadOf(request);
      if (paid) {
        stats.paidAttempts++;
        if (paid.type === 'deposit') stats.deposits++;
        mine.push(paid);
      }
      return fetch(request);
    };
    const res = await wrapFetchWithPayment(recording, client)(input, init).finally(() => {
      if (mine.length > 0) channel.lastCallAt = Date.now();
    });
    if (mine.length === 0) return res;
    if (mine.length > 1) stats.resynced += mine.length - 1;
    if (res.status < 400) stats.served++;
    else if (res.status === 402) {
      const reason = reasonOf(res);
      stats.refused[reason] = (stats.refused[reason] ?? 0) + 1;
      const channelId = mine[mine.length - 1]!.channelId;
      if (unrecoverable.has(reason) && channelId) {
        await channel.storage.delete(channelId);
        stats.stateDropped++;
      }
    }
    return res;
  };
}

/**
 * `count` payers paying `exact` only, then `channelPayers` more that pay fixed-price calls over a
 * batch-settlement channel (and funding with `exact`).
 */
export async function fundedPayers(chain: DevChain, count: number, usdc: bigint, channelPayers = 0): Promise<Payer[]> {
  const payers: Payer[] = [];
  for (let i = 0; i < count + channelPayers; i++) {
    const account = privateKeyToAccount(generatePrivateKey());
    await mintUsdc(chain, account.address, usdc);
    if (i < count) {
      payers.push({ account, address: account.address, start: usdc, pay: wrapFetchWithPayment(fetch, x402ClientFor(account)) });
      continue;
    }
    const { client, channel } = channelPayingClient(account, chain.rpcUrl);
    payers.push({ account, address: account.address, start: usdc, pay: channelFetch(client, channel), channel });
  }
  return payers;
}
