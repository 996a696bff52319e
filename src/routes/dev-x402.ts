import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { x402Client } from '@x402/core/client';
import { encodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentRequired, PaymentRequirements } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { getAddress, isAddressEqual, type Address } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { z } from 'zod';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../chain/constants.js';
import { chainTarget, resolveWallets } from '../chain/wallets.js';
import { AppError } from '../errors.js';
import { AtomicAmount, WalletAddress, errorResponses } from '../http/schemas.js';
import { X402_VERSION } from '../http/x402.js';

/**
 * Dev mode only (the embedded anvil chain): pays x402 challenges from the demo wallets, so that a
 * person can pay from Swagger UI (src/http/swagger-pay.ts) without a browser wallet. The demo
 * wallets are anvil's publicly known accounts 4-9; the service's own wallets (minter, escrow,
 * operator, fee) are never offered and never sign. Registered beside the faucet, never otherwise.
 */

/** A demo wallet: its anvil account index (as the start-up banner prints it) and address. */
interface DemoWallet {
  index: number;
  address: Address;
}

const WalletIndex = z
  .number()
  .int()
  .meta({ description: 'The anvil account index of a demo wallet, as GET /dev/x402/wallets lists them (4-9)', examples: [4] });

const DemoWalletInfo = z.object({
  index: WalletIndex,
  address: WalletAddress,
  usdc_balance: AtomicAmount.nullable().meta({ description: 'Its test USDC in atomic units; null when the chain could not be read' }),
});

const DemoWallets = z
  .object({ wallets: z.array(DemoWalletInfo) })
  .meta({
    id: 'DevDemoWallets',
    examples: [{ wallets: [{ index: 4, address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', usdc_balance: '10000000000' }] }],
  });

const hexAddress = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte hex address');

/** One `accepts` entry of a 402 challenge, kept as sent (unknown fields too): the payment names it as `accepted`. */
const AcceptedRequirements = z
  .looseObject({
    scheme: z.string(),
    network: z.string(),
    asset: hexAddress,
    amount: AtomicAmount,
    payTo: hexAddress,
    maxTimeoutSeconds: z.number().int().positive().max(86_400),
    extra: z.looseObject({ name: z.string(), version: z.string() }),
  })
  .meta({ description: 'The chosen entry of the 402 challenge’s `accepts` (the decoded PAYMENT-REQUIRED header), unchanged' });

const ResourceInfo = z
  .looseObject({ url: z.string(), description: z.string().optional(), mimeType: z.string().optional() })
  .meta({ description: 'The challenge’s `resource`, unchanged' });

const exampleAccepted = {
  scheme: 'exact',
  network: 'eip155:8453',
  asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
  amount: '1000',
  payTo: '0x90F79bf6EB2c4f870365E785982E1f101E93b906',
  maxTimeoutSeconds: 120,
  extra: { name: 'USD Coin', version: '2' },
};

const SignRequest = z
  .object({ wallet: WalletIndex, accepted: AcceptedRequirements, resource: ResourceInfo })
  .strict()
  .meta({
    id: 'DevX402SignRequest',
    examples: [{ wallet: 4, accepted: exampleAccepted, resource: { url: 'http://127.0.0.1:3000/v1/agents', description: 'Search agents', mimeType: 'application/json' } }],
  });

const SignResult = z
  .object({
    payment_signature: z.string().meta({ description: 'The value of the PAYMENT-SIGNATURE header: base64 of the x402 v2 payment payload' }),
    payer: WalletAddress,
    valid_before: z.string().meta({ description: 'Unix seconds after which the authorization can no longer move money' }),
  })
  .meta({
    id: 'DevX402SignResult',
    examples: [{ payment_signature: 'eyJ4NDAyVmVyc2lvbiI6Mi…', payer: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', valid_before: '1795000000' }],
  });

/** The demo wallets that may pay: anvil's demo accounts, less any the configuration made one of the service's own wallets. */
export function demoWallets(ownWallets: readonly Address[]): DemoWallet[] {
  return DEV_ROLES.demo
    .map((index) => ({ index, address: ANVIL_ACCOUNTS[index]!.address }))
    .filter((w) => !ownWallets.some((own) => isAddressEqual(own, w.address)));
}

export async function devX402Routes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const target = chainTarget(app.config);
  const wallets = resolveWallets(app.config);
  const own: Address[] = [
    wallets.escrowAddress,
    wallets.feeAddress,
    ...(wallets.operatorKey ? [privateKeyToAccount(wallets.operatorKey).address] : []),
    ANVIL_ACCOUNTS[DEV_ROLES.minter]!.address,
  ];
  const payers = demoWallets(own);
  const payees = [wallets.escrowAddress, wallets.feeAddress];

  app.get('/dev/x402/wallets', {
    config: { rateLimit: { max: 120, timeWindow: 60_000 } },
    schema: {
      operationId: 'devX402Wallets',
      tags: ['dev'],
      summary: 'Demo wallets that can pay from Swagger UI (dev chain only)',
      description:
        'The funded anvil demo wallets the dev signer (POST /dev/x402/sign) pays from, with their test USDC. The service’s own ' +
        'wallets (escrow, operator, fee, minter) are not among them. Exists only with the embedded dev chain (no CHAIN_RPC_URL).',
      response: { 200: DemoWallets, ...errorResponses() },
    },
    handler: async () => {
      const usdc = app.escrow?.usdc;
      const rows = await Promise.all(
        payers.map(async (w) => ({
          index: w.index,
          address: w.address,
          usdc_balance: usdc ? await usdc.balanceOf(w.address).then((b) => b.toString(), () => null) : null,
        })),
      );
      return { wallets: rows };
    },
  });

  app.post('/dev/x402/sign', {
    config: { rateLimit: { max: 60, timeWindow: 60_000 } },
    schema: {
      operationId: 'devX402Sign',
      tags: ['dev'],
      summary: 'Sign an x402 payment with a demo wallet (dev chain only)',
      description:
        'Signs the chosen `accepts` entry of a 402 challenge with a demo wallet, with the stock @x402/evm exact client scheme ' +
        '(an EIP-3009 TransferWithAuthorization), and returns the PAYMENT-SIGNATURE header to retry the request with. It signs ' +
        'only payments to this service (its network, its USDC, its escrow or fee wallet) and only for demo wallets: another ' +
        'index is refused. Swagger UI calls it when a person pays a try-it-out request. Exists only with the embedded dev chain.',
      body: SignRequest,
      response: { 200: SignResult, ...errorResponses(403) },
    },
    handler: async (req) => {
      const { wallet: index, resource } = req.body;
      const accepted = req.body.accepted as unknown as PaymentRequirements;
      const payer = payers.find((w) => w.index === index);
      if (!payer) {
        if (index >= 0 && index < ANVIL_ACCOUNTS.length) {
          throw new AppError('forbidden', `anvil account ${index} belongs to the service (minter, escrow, operator or fee wallet) and never pays; use a demo wallet (${payers.map((w) => w.index).join(', ')})`, {
            param: 'wallet',
          });
        }
        throw new AppError('validation_error', `wallet must be a demo wallet: one of ${payers.map((w) => w.index).join(', ')}`, { param: 'wallet' });
      }
      if (accepted.scheme !== 'exact') {
        throw new AppError('validation_error', 'scheme must be exact: the dev signer signs EIP-3009 authorizations (a batch-settlement channel needs a client that keeps its state)', {
          param: 'accepted.scheme',
        });
      }
      if (accepted.network !== target.network) {
        throw new AppError('validation_error', `network must be ${target.network}, the chain of this service`, { param: 'accepted.network' });
      }
      if (!isAddressEqual(accepted.asset as Address, target.usdc)) {
        throw new AppError('validation_error', `asset must be ${target.usdc}, the USDC of this service`, { param: 'accepted.asset' });
      }
      if (!payees.some((p) => isAddressEqual(p, accepted.payTo as Address))) {
        throw new AppError('validation_error', 'payTo must be this service’s escrow or fee wallet: the dev signer pays this service only', {
          param: 'accepted.payTo',
        });
      }
      if (BigInt(accepted.amount) <= 0n) {
        throw new AppError('validation_error', 'amount must be greater than zero', { param: 'accepted.amount' });
      }
      const client = new x402Client();
      client.register(target.network, new ExactEvmScheme(privateKeyToAccount(ANVIL_ACCOUNTS[payer.index]!.privateKey)));
      // The person confirmed the amount in the page; the service's own checks above bound what is signed.
      client.setSpendControls({ maxAmountPerPayment: false });
      const required: PaymentRequired = {
        x402Version: X402_VERSION,
        resource,
        accepts: [accepted],
      };
      const payload = await client.createPaymentPayload(required);
      const authorization = (payload.payload as { authorization?: { validBefore?: string } }).authorization;
      return {
        payment_signature: encodePaymentSignatureHeader(payload),
        payer: getAddress(payer.address),
        valid_before: String(authorization?.validBefore ?? ''),
      };
    },
  });
}
