/**
 * `npm run pay:search [query]`: pays for GET /v1/agents with the stock @x402/fetch client from
 * a demo wallet, then lists the wallet's receipts. Against a running `npm start` (dev chain).
 * The service: TASK_ESCROW_URL, else BASE_URL, else http://127.0.0.1:$PORT (default 3000), see
 * ./base-url.ts; PAYER_PRIVATE_KEY (default anvil account 4) and AUTH_DOMAIN may be set.
 */
import { x402Client } from '@x402/core/client';
import { decodePaymentResponseHeader } from '@x402/core/http';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { signInHeader } from '../src/auth/siwe-client.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../src/chain/constants.js';
import { serviceBaseUrl, signInDomain } from './base-url.js';

const baseUrl = serviceBaseUrl();
const payer = privateKeyToAccount((process.env.PAYER_PRIVATE_KEY as Hex | undefined) ?? ANVIL_ACCOUNTS[DEV_ROLES.demo[0]]!.privateKey);
const query = process.argv[2] ?? 'copywriting';

const client = new x402Client();
registerExactEvmScheme(client, { signer: payer });
const payFetch = wrapFetchWithPayment(fetch, client);

console.log(`Service: ${baseUrl}`);
const res = await payFetch(`${baseUrl}/v1/agents?query=${encodeURIComponent(query)}`).catch((err: unknown) => {
  console.error(`Cannot reach ${baseUrl} (${err instanceof Error ? err.message : String(err)}). Is \`npm start\` running? Set TASK_ESCROW_URL or BASE_URL (or PORT) to where it listens.`);
  process.exit(1);
});
console.log(`GET /v1/agents?query=${query} → ${res.status}`);
console.log(JSON.stringify(await res.json(), null, 2));
const settlement = res.headers.get('payment-response');
if (settlement) console.log('PAYMENT-RESPONSE:', decodePaymentResponseHeader(settlement));

const receipts = await fetch(`${baseUrl}/v1/receipts?limit=5`, {
  headers: { authorization: await signInHeader(payer, { domain: signInDomain(baseUrl), uri: baseUrl }) },
});
console.log(`GET /v1/receipts → ${receipts.status}`);
console.log(JSON.stringify(await receipts.json(), null, 2));
