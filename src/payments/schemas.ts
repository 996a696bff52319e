import { z } from 'zod';
import { AtomicAmount, Timestamp, WalletAddress } from '../http/schemas.js';

/** Wire shapes of payment receipts. */
export const ReceiptView = z
  .object({
    payment_id: z.string(),
    payer: WalletAddress,
    pay_to: WalletAddress,
    amount: AtomicAmount,
    asset: WalletAddress.meta({ description: 'USDC contract' }),
    network: z.string().meta({ description: 'CAIP-2 network, e.g. eip155:8453' }),
    authorization_nonce: z.string(),
    tx_hash: z.string(),
    endpoint: z.string().meta({ description: 'The operation paid for' }),
    kind: z.enum(['call_fee', 'escrow_funding']),
    task_id: z.string().nullable(),
    status: z.enum(['booked', 'refunded', 'deferred']).meta({
      description:
        'booked: the call was served and the payment settled; refunded: its effect did not happen and the whole payment was sent back; ' +
        'deferred: a micro-fee, the call was served and its authorization is settled in a later batch (`tx_hash` empty until then)',
    }),
    settled_at: Timestamp.meta({ description: 'When the payment was settled (deferred: when the call was served)' }),
  })
  .meta({
    id: 'Receipt',
    examples: [
      {
        payment_id: 'pay_8s7d6f5g4h3j2k1l0z9x',
        payer: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65',
        pay_to: '0x90F79bf6EB2c4f870365E785982E1f101E93b906',
        amount: '1000',
        asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913',
        network: 'eip155:8453',
        authorization_nonce: '0x5f1c…',
        tx_hash: '0x9a8b…',
        endpoint: 'GET /v1/tasks/:id/status',
        kind: 'call_fee',
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        status: 'booked',
        settled_at: '2026-11-21T12:04:00.000Z',
      },
    ],
  });

export const ReceiptsQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(50),
    cursor: z.string().regex(/^pay_[0-9a-z]{20}$/, 'must be a payment_id from a previous page').optional(),
  })
  .strict();

export const ReceiptList = z
  .object({ receipts: z.array(ReceiptView), next_cursor: z.string().nullable() })
  .meta({ id: 'ReceiptList', examples: [{ receipts: [], next_cursor: null }] });

export const ArrearsParams = z.object({ address: WalletAddress.meta({ description: 'The wallet whose arrears are paid' }) }).strict();

export const ArrearsPaid = z
  .object({
    payer: WalletAddress.meta({ description: 'The wallet whose arrears were paid: it is served again' }),
    repaid: AtomicAmount.meta({ description: 'What its failed fees came to, now paid' }),
    tx_hash: z.string().meta({ description: 'The settlement of this payment' }),
  })
  .meta({
    id: 'ArrearsPaid',
    examples: [{ payer: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', repaid: '2000', tx_hash: '0x9a8b…' }],
  });
export type ArrearsPaidT = z.infer<typeof ArrearsPaid>;
