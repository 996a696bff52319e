import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Address, Hash } from 'viem';
import { z } from 'zod';
import { AtomicAmount, WalletAddress, errorResponses } from '../http/schemas.js';
import { AppError } from '../errors.js';

export interface DevFaucet {
  mint(to: Address, amount: bigint): Promise<Hash>;
}

const MAX_FAUCET = 1_000_000_000n; // 1 000 test USDC per call

const FaucetBody = z
  .object({
    address: WalletAddress,
    amount: AtomicAmount.default('100000000').meta({ description: 'Atomic test USDC, at most 1000 USDC (default 100)' }),
  })
  .strict()
  .meta({ id: 'FaucetRequest', examples: [{ address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', amount: '100000000' }] });
const FaucetResult = z
  .object({ address: WalletAddress, amount: AtomicAmount, tx_hash: z.string() })
  .meta({ id: 'FaucetResult', examples: [{ address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', amount: '100000000', tx_hash: '0x3b…' }] });

/** Dev mode only (the embedded chain): mints test USDC to any address. Not registered otherwise. */
export async function devRoutes(fastify: FastifyInstance, opts: { faucet: DevFaucet }): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  app.post('/dev/faucet', {
    config: { rateLimit: { max: 30, timeWindow: 60_000 } },
    schema: {
      operationId: 'devFaucet',
      tags: ['dev'],
      summary: 'Mint test USDC (dev chain only)',
      description: 'Exists only when the service runs its embedded dev chain (no CHAIN_RPC_URL).',
      body: FaucetBody,
      response: { 200: FaucetResult, ...errorResponses() },
    },
    handler: async (req) => {
      const amount = BigInt(req.body.amount);
      if (amount <= 0n || amount > MAX_FAUCET) {
        throw new AppError('validation_error', 'amount must be between 1 and 1000000000 (1000 USDC)', { param: 'amount' });
      }
      const txHash = await opts.faucet.mint(req.body.address as Address, amount);
      return { address: req.body.address, amount: amount.toString(), tx_hash: txHash };
    },
  });
}
