import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { and, eq } from 'drizzle-orm';
import type { Address } from 'viem';
import type { PrivateKeyAccount } from 'viem/accounts';
import { ANVIL_ACCOUNTS, BASE_USDC, DEV_ROLES } from '../../src/chain/constants.js';
import { payments } from '../../src/db/schema.js';
import { startDevPaidApp, type DevPaidApp } from '../helpers/dev-paid.js';

/**
 * "A person can pay from Swagger UI", in headless Chromium (Debian's `chromium`, driven by
 * puppeteer-core): try-it-out on the priced search, the payment panel, then the paid answer in the
 * page and a receipt in the database. In dev mode with a demo wallet (the dev signer); on a build
 * without dev routes with an injected EIP-1193 wallet whose signatures are real (a viem account).
 * Screenshots are written to SCREENSHOT_DIR (default: <tmp>/task-escrow-screenshots) and their paths printed.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SCREENSHOTS = process.env.SCREENSHOT_DIR ?? path.join(tmpdir(), 'task-escrow-screenshots');
const SEARCH = '#operations-agents-searchAgents';
/** Chromium on a shared CI machine is slow to start and render Swagger UI. */
const BROWSER_TIMEOUT = 120_000;

let browser: Browser;
beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`No Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium; .ci/run does) or set CHROMIUM_PATH`);
  }
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
});
afterAll(async () => {
  await browser?.close();
});

async function registerAgent(p: DevPaidApp, owner: PrivateKeyAccount, name: string): Promise<string> {
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
    body: JSON.stringify({ name, capabilities: ['copywriting'], pricing: { base_rate: '100000' }, payout_address: owner.address }),
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** A page that fails the test on any script error (CSP refusals included) and records what the page fetched. */
async function openPage(): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err instanceof Error ? err.message : String(err)}`));
  page.on('console', (msg) => {
    // Chromium logs every 402 it receives, and the page's probe for the dev signer where there is none (404).
    const expected = /status of 402/.test(msg.text()) || (/status of 404/.test(msg.text()) && /\/dev\/x402\/wallets$/.test(msg.location().url ?? ''));
    if (msg.type() === 'error' && !expected) problems.push(`console: ${msg.text()} (${msg.location().url ?? ''})`);
  });
  return { page, problems };
}

/** Opens /docs, expands the search operation, presses "Try it out" and "Execute". */
async function executeSearch(page: Page): Promise<void> {
  await page.waitForSelector(`${SEARCH} .opblock-summary-control`);
  const tryOut = await page.$(`${SEARCH} .try-out__btn`);
  if (!tryOut) {
    await page.click(`${SEARCH} .opblock-summary-control`);
    await page.waitForSelector(`${SEARCH} .try-out__btn`);
    await page.click(`${SEARCH} .try-out__btn`);
  }
  await page.waitForSelector(`${SEARCH} .btn.execute`);
  await page.click(`${SEARCH} .btn.execute`);
}

/** The status and body Swagger UI shows for the executed request. */
async function shownResponse(page: Page, status: string): Promise<string> {
  const cell = JSON.stringify(`${SEARCH} .live-responses-table tbody .response-col_status`);
  // A string: it runs in the page (this project compiles without the DOM's types).
  await page.waitForFunction(`document.querySelector(${cell})?.textContent?.trim() === ${JSON.stringify(status)}`, { timeout: 20_000 });
  return page.$eval(`${SEARCH} .live-responses-table tbody .response-col_description`, (el) => el.textContent ?? '');
}

const text = (page: Page, selector: string) => page.$eval(selector, (el) => el.textContent?.trim() ?? '');

/** The payments a payer made for searches (the database keeps addresses lowercase). */
async function searchPayments(p: DevPaidApp, payer: Address) {
  return p.db.database.db
    .select()
    .from(payments)
    .where(and(eq(payments.payerAddress, payer.toLowerCase()), eq(payments.endpoint, 'GET /v1/agents')));
}

/** The receipts GET /v1/receipts lists for anvil account `index` (signed in with SIWE). */
async function receiptsOf(p: DevPaidApp, index: number): Promise<Record<string, unknown>[]> {
  const res = await fetch(`${p.baseUrl}/v1/receipts`, { headers: { authorization: await p.signIn(p.account(index)) } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { receipts: Record<string, unknown>[] }).receipts;
}

describe('Swagger UI in dev mode: pay from a demo wallet', () => {
  let p: DevPaidApp;
  let agentId: string;
  beforeAll(async () => {
    p = await startDevPaidApp();
    agentId = await registerAgent(p, p.account(DEV_ROLES.demo[0]), 'Browser Copy Desk');
  });
  afterAll(() => p?.close());

  it('shows the price and pay-to, cancels to the 402, then pays a search: 200 in the page, receipt recorded', { timeout: BROWSER_TIMEOUT }, async () => {
    const { page, problems } = await openPage();
    const index = DEV_ROLES.demo[2];
    const payer = ANVIL_ACCOUNTS[index]!.address;
    const before = await p.balance(payer);
    try {
      await page.goto(`${p.baseUrl}/docs`, { waitUntil: 'networkidle0' });

      // Cancelled: Swagger UI shows the 402 challenge as the service sent it; nothing is paid.
      await executeSearch(page);
      await page.waitForSelector('#x402-pay');
      await page.click('#x402-pay-cancel');
      expect(await shownResponse(page, '402')).toContain('payment_required');
      expect(await page.$('#x402-pay')).toBeNull();

      await page.click(`${SEARCH} .btn.execute`);
      await page.waitForSelector(`#x402-pay-source option[value="demo:${index}"]`);
      expect(await text(page, '#x402-pay-amount')).toBe('0.001 USDC');
      expect(await text(page, '#x402-pay-payto')).toBe(p.wallets.feeAddress);
      expect(await text(page, '#x402-pay-network')).toBe('Base · eip155:8453');
      expect(await text(page, '#x402-pay-confirm')).toBe('Pay 0.001 USDC');
      // Only demo wallets are offered: never the escrow, operator, fee or minter wallets.
      const offered = await page.$$eval('#x402-pay-source option', (options) => options.map((o) => (o as unknown as { value: string }).value));
      expect(offered).toEqual(DEV_ROLES.demo.map((i) => `demo:${i}`));
      await page.select('#x402-pay-source', `demo:${index}`);
      const shot = path.join(SCREENSHOTS, 'swagger-pay-dev-panel.png');
      await page.screenshot({ path: shot });
      console.log(`screenshot: ${shot}`);
      await page.click('#x402-pay-confirm');

      const body = await shownResponse(page, '200');
      expect(body).toContain(agentId);
      expect(body).toContain('Browser Copy Desk');
      await page.waitForSelector('#x402-pay-receipt');
      expect(await text(page, '#x402-pay-receipt')).toContain(payer);
      const done = path.join(SCREENSHOTS, 'swagger-pay-dev-paid.png');
      await page.screenshot({ path: done, fullPage: false });
      console.log(`screenshot: ${done}`);

      // As `npm start` runs: a micro-fee may be served first and settled later in a batch (deferred), or settled at once (booked).
      const rows = await searchPayments(p, payer);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ payTo: p.wallets.feeAddress.toLowerCase(), kind: 'call_fee' });
      expect(['booked', 'deferred']).toContain(rows[0]!.status);
      if (rows[0]!.status === 'booked') expect(await p.balance(payer)).toBe(before - 1000n);
      const receipts = await receiptsOf(p, index);
      expect(receipts).toHaveLength(1);
      expect(receipts[0]).toMatchObject({ endpoint: 'GET /v1/agents', amount: '1000', pay_to: p.wallets.feeAddress });
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

describe('Swagger UI without dev routes: pay with an injected EIP-1193 wallet', () => {
  let p: DevPaidApp;
  let agentId: string;
  beforeAll(async () => {
    p = await startDevPaidApp({ devRoutes: false, env: { MICRO_FEES_DEFERRED: 'false' } });
    agentId = await registerAgent(p, p.account(DEV_ROLES.demo[0]), 'Wallet Copy Desk');
  });
  afterAll(() => p?.close());

  it('connects window.ethereum, signs the EIP-3009 authorization with eth_signTypedData_v4 and pays: 200, settled, receipt booked', { timeout: BROWSER_TIMEOUT }, async () => {
    const signer = p.account(DEV_ROLES.demo[3]);
    const before = await p.balance(signer.address);
    const calls: string[] = [];
    const signed: { from: string; typed: Record<string, any> }[] = [];
    const { page, problems } = await openPage();
    try {
      // The node side of the fake provider: a real viem account signs what the page asks for.
      await page.exposeFunction('__testWalletRequest', async (method: string, paramsJson: string): Promise<string> => {
        calls.push(method);
        const params = JSON.parse(paramsJson) as unknown[];
        switch (method) {
          case 'eth_requestAccounts':
          case 'eth_accounts':
            return JSON.stringify([signer.address.toLowerCase()]); // wallets answer lowercase, as MetaMask does
          case 'eth_chainId':
            return JSON.stringify('0x2105');
          case 'eth_signTypedData_v4': {
            const [from, json] = params as [string, string];
            const typed = JSON.parse(json);
            signed.push({ from, typed });
            if (from.toLowerCase() !== signer.address.toLowerCase()) throw new Error(`unknown account ${from}`);
            const { EIP712Domain: _domain, ...types } = typed.types;
            return JSON.stringify(await signer.signTypedData({ domain: typed.domain, types, primaryType: typed.primaryType, message: typed.message }));
          }
          default:
            throw new Error(`unsupported method ${method}`);
        }
      });
      await page.evaluateOnNewDocument(`
        window.ethereum = {
          isTestWallet: true,
          request: async function (args) {
            var answer = await window.__testWalletRequest(args.method, JSON.stringify(args.params || []));
            return JSON.parse(answer);
          },
        };
      `);
      await page.goto(`${p.baseUrl}/docs`, { waitUntil: 'networkidle0' });
      expect((await fetch(`${p.baseUrl}/dev/x402/wallets`)).status).toBe(404);

      await executeSearch(page);
      await page.waitForSelector('#x402-pay-source option[value="wallet"]');
      const offered = await page.$$eval('#x402-pay-source option', (options) => options.map((o) => (o as unknown as { value: string }).value));
      expect(offered).toEqual(['wallet']); // no dev signer here: the browser wallet only
      expect(await text(page, '#x402-pay-amount')).toBe('0.001 USDC');
      expect(await page.$eval('#x402-pay-confirm', (b) => (b as unknown as { disabled: boolean }).disabled)).toBe(true);
      await page.click('#x402-pay-connect');
      await page.waitForFunction(`!document.querySelector('#x402-pay-confirm').disabled`);
      expect(await text(page, '#x402-pay-status')).toContain(signer.address.toLowerCase());
      const shot = path.join(SCREENSHOTS, 'swagger-pay-wallet-panel.png');
      await page.screenshot({ path: shot });
      console.log(`screenshot: ${shot}`);
      await page.click('#x402-pay-confirm');

      const body = await shownResponse(page, '200');
      expect(body).toContain(agentId);
      const done = path.join(SCREENSHOTS, 'swagger-pay-wallet-paid.png');
      await page.screenshot({ path: done });
      console.log(`screenshot: ${done}`);

      expect(calls).toContain('eth_requestAccounts');
      expect(signed).toHaveLength(1);
      expect(signed[0]!.typed).toMatchObject({
        primaryType: 'TransferWithAuthorization',
        domain: { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: BASE_USDC },
        message: { to: p.wallets.feeAddress, value: '1000', validAfter: '0' },
      });
      // Settled on chain before the answer (MICRO_FEES_DEFERRED=false): the browser-signed authorization moved the money.
      const rows = await searchPayments(p, signer.address);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ status: 'booked', authorizationNonce: signed[0]!.typed.message.nonce });
      expect(rows[0]!.txHash).toMatch(/^0x[0-9a-f]{64}$/);
      expect(await p.balance(signer.address)).toBe(before - 1000n);
      const receipts = await receiptsOf(p, DEV_ROLES.demo[3]);
      expect(receipts).toHaveLength(1);
      expect(receipts[0]).toMatchObject({ endpoint: 'GET /v1/agents', amount: '1000', tx_hash: rows[0]!.txHash });
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
