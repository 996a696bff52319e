import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, USDC_DECIMALS } from '../../chain/constants.js';
import { chainTarget, resolveWallets } from '../../chain/wallets.js';
import { AtomicAmount, WalletAddress, errorResponses } from '../../http/schemas.js';
import { X402_SCHEMES, X402_VERSION } from '../../http/x402.js';
import { priceNames, type FixedPriceName } from '../../payments/prices.js';

const networkExample = {
  network: 'eip155:8453',
  chain: 'base',
  chain_id: 8453,
  dev_chain: true,
  rpc_url: 'http://127.0.0.1:8545',
  usdc: { address: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913', decimals: 6, eip712_name: 'USD Coin', eip712_version: '2' },
  escrow_address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  fee_address: '0x90F79bf6EB2c4f870365E785982E1f101E93b906',
  x402: { enabled: true, version: 2, schemes: ['exact', 'batch-settlement'] },
  prices: {
    search_agents: '1000',
    get_agent: '2000',
    rate_agent: '1000',
    create_task: '5000',
    fund_task: '5000',
    task_status: '1000',
    task_result: '2000',
    cancel_task: '2000',
    dispute_task: '5000',
    claim_task: '2000',
    task_events: '5000',
    create_batch: '10000',
    batch_status: '1000',
    cancel_batch: '2000',
    batch_events: '5000',
  },
  platform_fee_bps: 250,
  micro_fees: { deferred: true, ceiling: '10000', payer_cap: '100000', min_validity_seconds: 60 },
  channels: {
    enabled: true,
    contract: '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003',
    deposit_collector: '0x4020806089470a89826cB9fB1f4059150b550004',
    withdraw_delay_seconds: 86400,
    deposit_calls: 1000,
    deposit_max: '1000000',
  },
};

export const NetworkInfo = z
  .object({
    network: z.string().meta({ description: 'The chain as CAIP-2 (what x402 challenges name in `accepts[].network`)' }),
    chain: z.enum(['base', 'base-sepolia']).meta({ description: 'The chain by name (CHAIN_NETWORK)' }),
    chain_id: z.number().int().meta({ description: 'EVM chain id (what SIWE messages must name)' }),
    dev_chain: z.boolean().meta({ description: 'true: an embedded anvil dev chain made to look like Base (test USDC from POST /dev/faucet); false: the real chain' }),
    rpc_url: z
      .string()
      .nullable()
      .meta({
        description:
          'A JSON-RPC URL of this chain for clients: the embedded dev chain’s own, else the one the operator published ' +
          '(PUBLIC_CHAIN_RPC_URL); null when none is published (use any RPC of the chain). Never the service’s own provider URL.',
      }),
    usdc: z
      .object({
        address: WalletAddress.meta({ description: 'The USDC contract (the x402 `asset`)' }),
        decimals: z.number().int(),
        eip712_name: z.string().meta({ description: 'EIP-712 domain name of the USDC contract (signing EIP-3009 authorizations)' }),
        eip712_version: z.string(),
      })
      .meta({ description: 'The token every amount is in' }),
    escrow_address: WalletAddress.meta({ description: 'The custodial escrow wallet: fundings and batches are paid to it' }),
    fee_address: WalletAddress.meta({ description: 'The fee wallet: the per-call prices are paid to it' }),
    x402: z.object({
      enabled: z.boolean().meta({ description: 'false: priced routes take a wallet signature and charge nothing; funding is impossible' }),
      version: z.number().int(),
      schemes: z.array(z.string()).meta({ description: 'The x402 schemes priced routes accept' }),
    }),
    prices: z
      .object(Object.fromEntries(priceNames.map((n) => [n, AtomicAmount])) as Record<FixedPriceName, typeof AtomicAmount>)
      .meta({
        description:
          'Per-call prices in atomic USDC, by operation. `fund_task` is the fee added to the escrow amount, `create_batch` the fee ' +
          'added to the items’ escrows.',
      }),
    platform_fee_bps: z.number().int().meta({ description: 'Platform fee taken from a released escrow, in basis points' }),
    micro_fees: z
      .object({
        deferred: z.boolean().meta({ description: 'true: micro-fees are served at once and settled later in batches' }),
        ceiling: AtomicAmount.meta({ description: 'A payment to the fee wallet of at most this much is a micro-fee' }),
        payer_cap: AtomicAmount.meta({ description: 'At most this much of one payer’s micro-fees is unsettled at a time; past it its calls settle first' }),
        min_validity_seconds: z.number().int().meta({ description: 'A micro-fee is deferred only if its authorization stays valid this long (its validBefore)' }),
      })
      .meta({
        description:
          'Micro-fees settled in batches: the call is answered before its `exact` authorization is settled (no PAYMENT-RESPONSE; ' +
          'the answer carries `x-payment-settlement: deferred`). A payer whose authorization then fails is refused with ' +
          '`payment_in_arrears` until it pays POST /v1/payers/{address}/arrears.',
      }),
    channels: z
      .object({
        enabled: z.boolean().meta({ description: 'true: fixed-price routes also accept the x402 `batch-settlement` scheme' }),
        contract: WalletAddress.meta({ description: 'The batch-settlement channel contract (the address @x402/evm expects)' }),
        deposit_collector: WalletAddress.meta({ description: 'The ERC-3009 deposit collector a deposit is authorized to' }),
        withdraw_delay_seconds: z.number().int().meta({ description: 'How long a payer’s own withdrawal from a channel waits' }),
        deposit_calls: z.number().int().meta({ description: 'A route’s `extra.minDeposit` asks for this many calls at its price…' }),
        deposit_max: AtomicAmount.meta({ description: '…but at most this much' }),
      })
      .meta({
        description:
          'Batch-settlement channels: deposit once into a channel, then pay each call with a voucher checked without the chain. ' +
          'The service claims and settles vouchers in batches and refunds idle channels; a client may ask for its remainder back at any time.',
      }),
  })
  .meta({ id: 'NetworkInfo', description: 'The chain, token, wallets, x402 schemes and prices of this service.', examples: [networkExample] });

export type NetworkInfoT = z.infer<typeof NetworkInfo>;

/** GET /v1/network: which chain, token and wallets the service uses, what it accepts and charges. Public, not priced. */
export async function networkRoutes(fastify: FastifyInstance, opts: { devChainRpcUrl?: string | undefined }): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const { config } = app;
  const target = chainTarget(config);
  const wallets = resolveWallets(config);
  const devChain = !config.CHAIN_RPC_URL;
  const info: NetworkInfoT = {
    network: target.network,
    chain: config.CHAIN_NETWORK,
    chain_id: target.chainId,
    dev_chain: devChain,
    rpc_url: (devChain ? opts.devChainRpcUrl : undefined) ?? config.PUBLIC_CHAIN_RPC_URL ?? null,
    usdc: { address: target.usdc, decimals: USDC_DECIMALS, eip712_name: target.usdcDomain.name, eip712_version: target.usdcDomain.version },
    escrow_address: wallets.escrowAddress,
    fee_address: wallets.feeAddress,
    x402: { enabled: config.X402_ENABLED, version: X402_VERSION, schemes: !config.X402_ENABLED ? [] : app.channels ? [...X402_SCHEMES] : ['exact'] },
    prices: Object.fromEntries(priceNames.map((n) => [n, app.prices[n].toString()])) as Record<FixedPriceName, string>,
    platform_fee_bps: config.PLATFORM_FEE_BPS,
    micro_fees: {
      deferred: app.microFees !== undefined,
      ceiling: config.MICRO_FEE_CEILING.toString(),
      payer_cap: config.MICRO_FEE_PAYER_CAP.toString(),
      min_validity_seconds: config.MICRO_FEE_MIN_VALIDITY_SECONDS,
    },
    channels: {
      enabled: app.channels !== undefined,
      contract: BATCH_SETTLEMENT_ADDRESS,
      deposit_collector: ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
      withdraw_delay_seconds: config.CHANNEL_WITHDRAW_DELAY_SECONDS,
      deposit_calls: config.CHANNEL_DEPOSIT_CALLS,
      deposit_max: config.CHANNEL_DEPOSIT_MAX.toString(),
    },
  };

  app.get('/v1/network', {
    schema: {
      operationId: 'getNetwork',
      tags: ['operations'],
      summary: 'The chain, token, wallets, payment schemes and prices',
      description:
        'What a client needs before it pays: the chain (CAIP-2 and chain id), the USDC contract and its EIP-712 domain, the ' +
        'escrow and fee wallets payments go to, a public RPC URL when one is published (the embedded dev chain’s, or ' +
        'PUBLIC_CHAIN_RPC_URL), the x402 schemes accepted and the price of every priced operation. Public, not priced.',
      response: { 200: NetworkInfo, ...errorResponses() },
    },
    handler: async () => info,
  });
}
