import { z } from 'zod';
import { Timestamp, WalletAddress } from '../http/schemas.js';

/** Wire shapes of sessions (auth/session.ts). */
export const SessionCreated = z
  .object({
    token: z.string().meta({ description: 'The session token (a JWT): send it as `Authorization: Bearer <token>`. Keep it secret.' }),
    token_type: z.literal('Bearer'),
    address: WalletAddress.meta({ description: 'The signed-in wallet (checksummed), the caller of every request made with the token' }),
    expires_at: Timestamp.meta({
      description: 'When the token stops working: SESSION_TTL_SECONDS after sign-in, or the sign-in message’s expiration time if that is sooner',
    }),
  })
  .meta({
    id: 'Session',
    examples: [
      {
        token:
          'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIweDE1ZDM0QUFmNTQyNjdEQjdEN2MzNjc4MzlBQWY3MUEwMGEyQzZBNjUiLCJhdWQiOiJhcGkuZXhhbXBsZS5jb20iLCJpc3MiOiJ0YXNrLWVzY3JvdyIsImlhdCI6MTc5NTI2MjQwMCwiZXhwIjoxNzk1MjYzMzAwLCJqdGkiOiJzZXNzXzRrOWQyaDdzMWEzZjVnNmo4bDB6In0.tvKUs2EffkDa_SIOSJUQsMYd0-zlp2Cp48W7fKC2R2c',
        token_type: 'Bearer',
        address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65',
        expires_at: '2026-11-21T12:15:00.000Z',
      },
    ],
  });

export const SessionRevoked = z
  .object({
    revoked: z.literal(true).meta({ description: 'The token no longer works, in any process of the service' }),
    address: WalletAddress,
    expires_at: Timestamp.meta({ description: 'When the token would have expired' }),
  })
  .meta({
    id: 'SessionRevoked',
    examples: [{ revoked: true, address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', expires_at: '2026-11-21T12:15:00.000Z' }],
  });
