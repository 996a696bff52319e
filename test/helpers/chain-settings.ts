/** A complete, made-up set of real-chain settings (config refuses CHAIN_RPC_URL without them). */
export const REAL_CHAIN_ENV = {
  CHAIN_RPC_URL: 'https://base.example',
  ESCROW_PRIVATE_KEY: `0x${'11'.repeat(32)}`,
  OPERATOR_PRIVATE_KEY: `0x${'22'.repeat(32)}`,
  FEE_ADDRESS: `0x${'33'.repeat(20)}`,
  CALLBACK_SIGNING_SECRET: 'a-callback-secret-of-at-least-32-characters',
  SESSION_SECRET: 'a-session-secret-of-at-least-32-characters',
} as const;
