import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { x402Client } from '@x402/core/client';
import { x402Facilitator } from '@x402/core/facilitator';
import type { PaymentRequired, PaymentRequirements } from '@x402/core/types';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { registerExactEvmScheme as registerExactEvmClientScheme } from '@x402/evm/exact/client';
import { registerExactEvmScheme as registerExactEvmFacilitatorScheme } from '@x402/evm/exact/facilitator';
import {
  createPublicClient,
  createTestClient,
  createWalletClient,
  encodeFunctionData,
  domainSeparator,
  http,
  keccak256,
  parseEventLogs,
  parseSignature,
  publicActions,
  serializeSignature,
  toHex,
  type Address,
  type Hex,
} from 'viem';
import { mnemonicToAccount, privateKeyToAccount } from 'viem/accounts';
import { base } from 'viem/chains';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multicall3Abi, testUsdcAbi } from '../../src/chain/dev/contracts.js';
import { ANVIL_ACCOUNTS, ANVIL_MNEMONIC, BASE_USDC, MULTICALL3, type DevAccount, AUTHORIZATION_FIELDS } from '../../src/chain/constants.js';
import { pidFilePath, readPidFile, writePidFile } from '../../src/chain/dev/anvil-processes.js';
import {
  mintUsdc,
  pickFreePort,
  resolveAnvilBinary,
  startDevChain,
  usdcBalance,
  type DevChain,
} from '../../src/chain/dev/devchain.js';
import { isRunning, killQuietly, sigkill, startChainInChild, waitForRpc, waitUntilGone } from './process-helpers.js';

const FUND_AMOUNT = 10_000_000_000n;
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const DOMAIN = { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: BASE_USDC } as const;

const AUTHORIZATION_TYPES = {
  TransferWithAuthorization: AUTHORIZATION_FIELDS,
  ReceiveWithAuthorization: AUTHORIZATION_FIELDS,
} as const;
const CANCEL_TYPES = {
  CancelAuthorization: [
    { name: 'authorizer', type: 'address' },
    { name: 'nonce', type: 'bytes32' },
  ],
} as const;
const PERMIT_TYPES = {
  Permit: [
    { name: 'owner', type: 'address' },
    { name: 'spender', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'nonce', type: 'uint256' },
    { name: 'deadline', type: 'uint256' },
  ],
} as const;

interface Authorization {
  from: Address;
  to: Address;
  value: bigint;
  validAfter: bigint;
  validBefore: bigint;
  nonce: Hex;
}

const nowSeconds = (): bigint => BigInt(Math.floor(Date.now() / 1000));
const randomNonce = (): Hex => toHex(randomBytes(32));
const randomAddress = (): Address => privateKeyToAccount(toHex(randomBytes(32))).address;

function authorization(from: DevAccount, to: Address, value: bigint, overrides: Partial<Authorization> = {}): Authorization {
  return {
    from: from.address,
    to,
    value,
    validAfter: 0n,
    validBefore: nowSeconds() + 3600n,
    nonce: randomNonce(),
    ...overrides,
  };
}

async function signAuthorization(
  signer: DevAccount,
  auth: Authorization,
  primaryType: keyof typeof AUTHORIZATION_TYPES = 'TransferWithAuthorization',
): Promise<Hex> {
  return privateKeyToAccount(signer.privateKey).signTypedData({
    domain: DOMAIN,
    types: AUTHORIZATION_TYPES,
    primaryType,
    message: auth,
  });
}

/** The same signature with s' = n - s and the other parity: ecrecover still returns the signer. */
function malleate(signature: Hex): Hex {
  const { r, s, yParity } = parseSignature(signature);
  const flippedS = toHex(SECP256K1_N - BigInt(s), { size: 32 });
  return serializeSignature({ r, s: flippedS, yParity: yParity === 0 ? 1 : 0 });
}

function vrs(signature: Hex): { v: number; r: Hex; s: Hex } {
  const { r, s, yParity } = parseSignature(signature);
  return { v: 27 + yParity, r, s };
}

describe('dev chain: anvil as Base mainnet', () => {
  let chain: DevChain;
  let startMs = 0;
  const publicClient = () => createPublicClient({ chain: base, transport: http(chain.rpcUrl) });
  const walletFor = (account: DevAccount) =>
    createWalletClient({ account: privateKeyToAccount(account.privateKey), chain: base, transport: http(chain.rpcUrl) });
  const balanceOf = (address: Address) => usdcBalance(chain.rpcUrl, address);

  async function sendAndWait(hash: Hex) {
    const receipt = await publicClient().waitForTransactionReceipt({ hash });
    expect(receipt.status).toBe('success');
    return receipt;
  }

  beforeAll(async () => {
    const started = performance.now();
    chain = await startDevChain({ silent: true });
    startMs = performance.now() - started;
  });

  afterAll(async () => {
    await chain?.stop();
  });

  describe('chain and accounts', () => {
    it('answers eth_chainId 8453 and starts quickly', async () => {
      expect(await publicClient().getChainId()).toBe(8453);
      expect(chain.chainId).toBe(8453);
      expect(chain.rpcUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(startMs).toBeLessThan(5_000);
    });

    it('exposes the 10 default anvil accounts, derived from the test mnemonic', async () => {
      expect(chain.accounts).toHaveLength(10);
      for (const account of chain.accounts) {
        expect(privateKeyToAccount(account.privateKey).address).toBe(account.address);
      }
      // Mnemonic derivation is slow (PBKDF2 per call): check the first and the last index.
      for (const index of [0, 9]) {
        expect(mnemonicToAccount(ANVIL_MNEMONIC, { addressIndex: index }).address).toBe(chain.accounts[index]!.address);
      }
      const nodeAccounts = await createWalletClient({ transport: http(chain.rpcUrl) }).getAddresses(); // eth_accounts
      expect(nodeAccounts.map((a) => a.toLowerCase())).toEqual(chain.accounts.map((a) => a.address.toLowerCase()));
    });
  });

  describe('TestUSDC at the Base USDC address', () => {
    it('reads like USDC: name, symbol, decimals, version, minter', async () => {
      expect(chain.usdc).toBe(BASE_USDC);
      const token = { address: BASE_USDC, abi: testUsdcAbi } as const;
      const client = publicClient();
      expect(await client.readContract({ ...token, functionName: 'name' })).toBe('USD Coin');
      expect(await client.readContract({ ...token, functionName: 'symbol' })).toBe('USDC');
      expect(await client.readContract({ ...token, functionName: 'decimals' })).toBe(6);
      expect(await client.readContract({ ...token, functionName: 'version' })).toBe('2');
      expect(await client.readContract({ ...token, functionName: 'minter' })).toBe(ANVIL_ACCOUNTS[0]!.address);
    });

    it('computes the EIP-712 domain for chain 8453 at the copied address, with Circle type hashes', async () => {
      const token = { address: BASE_USDC, abi: testUsdcAbi } as const;
      const client = publicClient();
      const expectedDomain = domainSeparator({ domain: DOMAIN });
      expect(await client.readContract({ ...token, functionName: 'DOMAIN_SEPARATOR' })).toBe(expectedDomain);
      const typeHash = (s: string) => keccak256(toHex(s));
      expect(await client.readContract({ ...token, functionName: 'TRANSFER_WITH_AUTHORIZATION_TYPEHASH' })).toBe(
        typeHash(
          'TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)',
        ),
      );
      expect(await client.readContract({ ...token, functionName: 'CANCEL_AUTHORIZATION_TYPEHASH' })).toBe(
        typeHash('CancelAuthorization(address authorizer,bytes32 nonce)'),
      );
      expect(await client.readContract({ ...token, functionName: 'PERMIT_TYPEHASH' })).toBe(
        typeHash('Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)'),
      );
    });

    it('funded every dev account with 10 000 USDC', async () => {
      const balances = await Promise.all(chain.accounts.map((a) => balanceOf(a.address)));
      expect(balances).toEqual(chain.accounts.map(() => FUND_AMOUNT));
      const totalSupply = await publicClient().readContract({
        address: BASE_USDC,
        abi: testUsdcAbi,
        functionName: 'totalSupply',
      });
      expect(totalSupply).toBeGreaterThanOrEqual(FUND_AMOUNT * 10n);
    });

    it('lets only the minter mint', async () => {
      const intruder = walletFor(ANVIL_ACCOUNTS[1]!);
      await expect(
        intruder.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'mint',
          args: [intruder.account.address, 1n],
        }),
      ).rejects.toThrow(/caller is not a minter/);
    });

    it('mintUsdc (dev faucet) mints to any address, also concurrently', async () => {
      const recipient = randomAddress();
      await mintUsdc(chain, recipient, 5n);
      await Promise.all([1n, 2n, 3n, 4n].map((amount) => mintUsdc(chain, recipient, amount)));
      expect(await balanceOf(recipient)).toBe(15n);
    });
  });

  describe('EIP-3009', () => {
    const payer = ANVIL_ACCOUNTS[3]!;
    const payee = ANVIL_ACCOUNTS[4]!;
    const relayer = ANVIL_ACCOUNTS[5]!;

    it('transferWithAuthorization (v, r, s) moves funds once; a replay reverts', async () => {
      const auth = authorization(payer, payee.address, 1_234_567n);
      const { v, r, s } = vrs(await signAuthorization(payer, auth));
      const args = [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce, v, r, s] as const;
      const [payerBefore, payeeBefore, relayerBefore] = await Promise.all([
        balanceOf(payer.address),
        balanceOf(payee.address),
        balanceOf(relayer.address),
      ]);

      const relay = walletFor(relayer);
      const receipt = await sendAndWait(
        await relay.writeContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'transferWithAuthorization', args }),
      );

      expect(await balanceOf(payer.address)).toBe(payerBefore - auth.value);
      expect(await balanceOf(payee.address)).toBe(payeeBefore + auth.value);
      expect(await balanceOf(relayer.address)).toBe(relayerBefore);
      const events = parseEventLogs({ abi: testUsdcAbi, logs: receipt.logs });
      expect(events.map((e) => e.eventName)).toEqual(['AuthorizationUsed', 'Transfer']);
      expect(
        await publicClient().readContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'authorizationState',
          args: [payer.address, auth.nonce],
        }),
      ).toBe(true);

      await expect(
        relay.writeContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'transferWithAuthorization', args }),
      ).rejects.toThrow(/authorization is used or canceled/);
      expect(await balanceOf(payee.address)).toBe(payeeBefore + auth.value);
    });

    it('transferWithAuthorization (bytes signature) works and rejects a signature over other values', async () => {
      const auth = authorization(payer, payee.address, 42n);
      const signature = await signAuthorization(payer, auth);
      const relay = walletFor(relayer);
      const payeeBefore = await balanceOf(payee.address);

      await expect(
        relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'transferWithAuthorization',
          args: [auth.from, auth.to, auth.value + 1n, auth.validAfter, auth.validBefore, auth.nonce, signature],
        }),
      ).rejects.toThrow(/invalid signature/);

      await sendAndWait(
        await relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'transferWithAuthorization',
          args: [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce, signature],
        }),
      );
      expect(await balanceOf(payee.address)).toBe(payeeBefore + 42n);
    });

    it('rejects a malleable (high-s) signature and a bad v even though ecrecover would accept them', async () => {
      const auth = authorization(payer, payee.address, 7n);
      const signature = await signAuthorization(payer, auth);
      const relay = walletFor(relayer);
      const base6 = [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce] as const;

      await expect(
        relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'transferWithAuthorization',
          args: [...base6, malleate(signature)],
        }),
      ).rejects.toThrow(/invalid signature 's' value/);
      const { v, r, s } = vrs(signature);
      await expect(
        relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'transferWithAuthorization',
          args: [...base6, v - 27, r, s],
        }),
      ).rejects.toThrow(/invalid signature 'v' value/);
    });

    it('enforces validAfter and validBefore', async () => {
      const relay = walletFor(relayer);
      const expired = authorization(payer, payee.address, 1n, { validBefore: nowSeconds() - 10n });
      const early = authorization(payer, payee.address, 1n, { validAfter: nowSeconds() + 3600n });
      for (const [auth, reason] of [
        [expired, /authorization is expired/],
        [early, /authorization is not yet valid/],
      ] as const) {
        const signature = await signAuthorization(payer, auth);
        await expect(
          relay.writeContract({
            address: BASE_USDC,
            abi: testUsdcAbi,
            functionName: 'transferWithAuthorization',
            args: [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce, signature],
          }),
        ).rejects.toThrow(reason);
      }
    });

    it('receiveWithAuthorization must be submitted by the payee', async () => {
      const auth = authorization(payer, payee.address, 99n);
      const signature = await signAuthorization(payer, auth, 'ReceiveWithAuthorization');
      const args = [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce, signature] as const;
      const payeeBefore = await balanceOf(payee.address);

      await expect(
        walletFor(relayer).writeContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'receiveWithAuthorization', args }),
      ).rejects.toThrow(/caller must be the payee/);
      await sendAndWait(
        await walletFor(payee).writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'receiveWithAuthorization',
          args,
        }),
      );
      expect(await balanceOf(payee.address)).toBe(payeeBefore + 99n);
    });

    it('cancelAuthorization burns the nonce so the authorization can no longer be used', async () => {
      const auth = authorization(payer, payee.address, 500n);
      const transferSignature = await signAuthorization(payer, auth);
      const signCancel = (signer: DevAccount) =>
        privateKeyToAccount(signer.privateKey).signTypedData({
          domain: DOMAIN,
          types: CANCEL_TYPES,
          primaryType: 'CancelAuthorization',
          message: { authorizer: payer.address, nonce: auth.nonce },
        });
      const relay = walletFor(relayer);

      await expect(
        relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'cancelAuthorization',
          args: [payer.address, auth.nonce, await signCancel(payee)],
        }),
      ).rejects.toThrow(/invalid signature/);

      const { v, r, s } = vrs(await signCancel(payer));
      const receipt = await sendAndWait(
        await relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'cancelAuthorization',
          args: [payer.address, auth.nonce, v, r, s],
        }),
      );
      const [canceled] = parseEventLogs({ abi: testUsdcAbi, logs: receipt.logs, eventName: 'AuthorizationCanceled' });
      expect(canceled?.args).toEqual({ authorizer: payer.address, nonce: auth.nonce });

      await expect(
        relay.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'transferWithAuthorization',
          args: [auth.from, auth.to, auth.value, auth.validAfter, auth.validBefore, auth.nonce, transferSignature],
        }),
      ).rejects.toThrow(/authorization is used or canceled/);
    });
  });

  describe('EIP-2612 permit', () => {
    const owner = ANVIL_ACCOUNTS[6]!;
    const spender = ANVIL_ACCOUNTS[7]!;

    async function signPermit(value: bigint, nonce: bigint, deadline: bigint): Promise<Hex> {
      return privateKeyToAccount(owner.privateKey).signTypedData({
        domain: DOMAIN,
        types: PERMIT_TYPES,
        primaryType: 'Permit',
        message: { owner: owner.address, spender: spender.address, value, nonce, deadline },
      });
    }

    const nonceOf = (address: Address) =>
      publicClient().readContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'nonces', args: [address] });

    it('sets the allowance from a signature, bumps the nonce, and cannot be replayed', async () => {
      const nonce = await nonceOf(owner.address);
      const deadline = nowSeconds() + 600n;
      const { v, r, s } = vrs(await signPermit(2_000n, nonce, deadline));
      const args = [owner.address, spender.address, 2_000n, deadline, v, r, s] as const;
      const spenderWallet = walletFor(spender);

      await sendAndWait(await spenderWallet.writeContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'permit', args }));
      expect(
        await publicClient().readContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'allowance',
          args: [owner.address, spender.address],
        }),
      ).toBe(2_000n);
      expect(await nonceOf(owner.address)).toBe(nonce + 1n);

      const recipient = randomAddress();
      await sendAndWait(
        await spenderWallet.writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'transferFrom',
          args: [owner.address, recipient, 1_500n],
        }),
      );
      expect(await balanceOf(recipient)).toBe(1_500n);

      await expect(
        spenderWallet.writeContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'permit', args }),
      ).rejects.toThrow(/EIP2612: invalid signature/);
    });

    it('rejects an expired permit', async () => {
      const deadline = nowSeconds() - 1n;
      const signature = await signPermit(1n, await nonceOf(owner.address), deadline);
      await expect(
        walletFor(spender).writeContract({
          address: BASE_USDC,
          abi: testUsdcAbi,
          functionName: 'permit',
          args: [owner.address, spender.address, 1n, deadline, signature],
        }),
      ).rejects.toThrow(/permit is expired/);
    });
  });

  describe('Multicall3 at the canonical address', () => {
    it('aggregate3 batches calls and honours allowFailure', async () => {
      const client = publicClient();
      const holder = ANVIL_ACCOUNTS[9]!.address;
      const nameCall = encodeFunctionData({ abi: testUsdcAbi, functionName: 'name' });
      const balanceCall = encodeFunctionData({ abi: testUsdcAbi, functionName: 'balanceOf', args: [holder] });
      // mint from the Multicall3 contract is not from the minter: it reverts.
      const failingCall = encodeFunctionData({ abi: testUsdcAbi, functionName: 'mint', args: [holder, 1n] });

      // aggregate3 is payable, so viem calls it (eth_call) through simulateContract.
      const { result: results } = await client.simulateContract({
        address: MULTICALL3,
        abi: multicall3Abi,
        functionName: 'aggregate3',
        args: [
          [
            { target: BASE_USDC, allowFailure: false, callData: nameCall },
            { target: BASE_USDC, allowFailure: false, callData: balanceCall },
            { target: BASE_USDC, allowFailure: true, callData: failingCall },
          ],
        ],
      });
      expect(results.map((r) => r.success)).toEqual([true, true, false]);
      expect(BigInt(results[1]!.returnData)).toBe(await balanceOf(holder));

      await expect(
        client.simulateContract({
          address: MULTICALL3,
          abi: multicall3Abi,
          functionName: 'aggregate3',
          args: [[{ target: BASE_USDC, allowFailure: false, callData: failingCall }]],
        }),
      ).rejects.toThrow(/Multicall3: call failed/);
    });

    it('answers the helper views and serves viem multicall on the Base chain config', async () => {
      const client = publicClient();
      const read = <F extends 'getChainId' | 'getBlockNumber' | 'getCurrentBlockTimestamp'>(functionName: F) =>
        client.readContract({ address: MULTICALL3, abi: multicall3Abi, functionName });
      expect(await read('getChainId')).toBe(8453n);
      expect(await read('getBlockNumber')).toBe(await client.getBlockNumber());
      expect(Number(await read('getCurrentBlockTimestamp'))).toBeGreaterThan(Date.now() / 1000 - 3600);
      const holder = ANVIL_ACCOUNTS[2]!.address;
      expect(
        await client.readContract({ address: MULTICALL3, abi: multicall3Abi, functionName: 'getEthBalance', args: [holder] }),
      ).toBe(await client.getBalance({ address: holder }));

      // viem's multicall() goes to chain.contracts.multicall3 (0xcA11…) with aggregate3.
      const [symbol, decimals] = await client.multicall({
        contracts: [
          { address: BASE_USDC, abi: testUsdcAbi, functionName: 'symbol' },
          { address: BASE_USDC, abi: testUsdcAbi, functionName: 'decimals' },
        ],
        allowFailure: false,
      });
      expect([symbol, decimals]).toEqual(['USDC', 6]);
    });
  });

  describe('x402 exact scheme end to end (stock @x402/core + @x402/evm)', () => {
    it('verifies and settles an EIP-3009 payment with an in-process facilitator', async () => {
      const facilitatorAccount = ANVIL_ACCOUNTS[1]!;
      const payTo = ANVIL_ACCOUNTS[2]!.address;
      const payer = ANVIL_ACCOUNTS[3]!;

      const facilitatorClient = createWalletClient({
        account: privateKeyToAccount(facilitatorAccount.privateKey),
        chain: base,
        transport: http(chain.rpcUrl),
      }).extend(publicActions);
      const facilitatorSigner = toFacilitatorEvmSigner({
        address: facilitatorClient.account.address,
        readContract: (args) => facilitatorClient.readContract(args as Parameters<typeof facilitatorClient.readContract>[0]),
        verifyTypedData: (args) =>
          facilitatorClient.verifyTypedData(args as Parameters<typeof facilitatorClient.verifyTypedData>[0]),
        writeContract: (args) =>
          facilitatorClient.writeContract(args as Parameters<typeof facilitatorClient.writeContract>[0]),
        sendTransaction: (args) => facilitatorClient.sendTransaction(args),
        waitForTransactionReceipt: (args) => facilitatorClient.waitForTransactionReceipt(args),
        getCode: (args) => facilitatorClient.getCode(args),
      });
      const facilitator = new x402Facilitator();
      registerExactEvmFacilitatorScheme(facilitator, { signer: facilitatorSigner, networks: 'eip155:8453' });

      const client = new x402Client();
      registerExactEvmClientScheme(client, { signer: privateKeyToAccount(payer.privateKey) });

      const requirements: PaymentRequirements = {
        scheme: 'exact',
        network: 'eip155:8453',
        amount: '1000',
        asset: BASE_USDC,
        payTo,
        maxTimeoutSeconds: 60,
        extra: { name: 'USD Coin', version: '2' },
      };
      const paymentRequired: PaymentRequired = {
        x402Version: 2,
        resource: { url: 'http://localhost/test', description: 'dev chain test', mimeType: 'application/json' },
        accepts: [requirements],
      };
      const payload = await client.createPaymentPayload(paymentRequired);
      const [payToBefore, payerBefore] = await Promise.all([balanceOf(payTo), balanceOf(payer.address)]);

      const verified = await facilitator.verify(payload, requirements);
      expect(verified).toMatchObject({ isValid: true, payer: payer.address });

      const settled = await facilitator.settle(payload, requirements);
      expect(settled).toMatchObject({ success: true, network: 'eip155:8453', payer: payer.address });
      expect(settled.transaction).toMatch(/^0x[0-9a-f]{64}$/);
      expect(await balanceOf(payTo)).toBe(payToBefore + 1000n);
      expect(await balanceOf(payer.address)).toBe(payerBefore - 1000n);

      // The nonce is spent: verifying the same payload again is refused with a precise reason
      // (diagnosed through Multicall3 tryAggregate).
      const again = await facilitator.verify(payload, requirements);
      expect(again.isValid).toBe(false);
      expect(again.invalidReason).toBe('invalid_exact_evm_nonce_already_used');
    });
  });
});

describe('dev chain lifecycle', () => {
  const tempDirs: string[] = [];
  const makeTempDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'devchain-test-'));
    tempDirs.push(dir);
    return dir;
  };

  afterAll(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  it('persists balances across a restart with a state file and does not mint again', async () => {
    const stateFile = join(makeTempDir(), 'nested', 'anvil-state.json');
    const recipient = randomAddress();

    const first = await startDevChain({ stateFile, silent: true, fundAccounts: 2 });
    expect(first.restored).toBe(false);
    await mintUsdc(first, recipient, 4_321n);
    const supplyBefore = await createPublicClient({ transport: http(first.rpcUrl) }).readContract({
      address: BASE_USDC,
      abi: testUsdcAbi,
      functionName: 'totalSupply',
    });
    expect(supplyBefore).toBe(2n * FUND_AMOUNT + 4_321n);
    await first.stop();
    expect(statSync(stateFile).size).toBeGreaterThan(0);

    const second = await startDevChain({ stateFile, silent: true, fundAccounts: 2 });
    try {
      expect(second.restored).toBe(true);
      expect(await usdcBalance(second.rpcUrl, recipient)).toBe(4_321n);
      expect(await usdcBalance(second.rpcUrl, ANVIL_ACCOUNTS[0]!.address)).toBe(FUND_AMOUNT);
      expect(await usdcBalance(second.rpcUrl, ANVIL_ACCOUNTS[2]!.address)).toBe(0n);
      const client = createPublicClient({ transport: http(second.rpcUrl) });
      expect(await client.readContract({ address: BASE_USDC, abi: testUsdcAbi, functionName: 'totalSupply' })).toBe(
        supplyBefore,
      );
      // the restored chain's clock was moved to the present
      const latest = await client.getBlock();
      expect(Number(latest.timestamp)).toBeGreaterThan(Date.now() / 1000 - 60);
    } finally {
      await second.stop();
    }
  }, 20_000);

  it('stop() is idempotent and the endpoint goes away', async () => {
    const chain = await startDevChain({ silent: true, fundAccounts: 0 });
    expect(await usdcBalance(chain.rpcUrl, ANVIL_ACCOUNTS[0]!.address)).toBe(0n);
    await chain.stop();
    await chain.stop();
    await expect(usdcBalance(chain.rpcUrl, ANVIL_ACCOUNTS[0]!.address)).rejects.toThrow();
    expect(isRunning(chain.pid)).toBe(false);
  });

  it('fails with anvil’s own error when the requested port is taken', async () => {
    // Something else listens on the port (and hangs up on anyone who connects).
    const blocker: Server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const address = blocker.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      await expect(startDevChain({ port, silent: true })).rejects.toThrow(/anvil exited.*Address already in use/s);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('kills anvil when the parent process exits without calling stop()', async () => {
    const dir = makeTempDir();
    const script = join(dir, 'orphan.mts');
    const devchainUrl = pathToFileURL(fileURLToPath(new URL('../../src/chain/dev/devchain.ts', import.meta.url))).href;
    writeFileSync(
      script,
      `import { startDevChain } from ${JSON.stringify(devchainUrl)};\n` +
        `const chain = await startDevChain({ silent: true, fundAccounts: 0 });\n` +
        `console.log(chain.pid);\n` +
        `process.exit(0);\n`,
    );
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      timeout: 20_000,
    });
    const pid = Number(stdout.trim());
    expect(pid).toBeGreaterThan(0);
    const deadline = Date.now() + 5_000;
    while (isRunning(pid) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(isRunning(pid)).toBe(false);
  }, 30_000);

  it('kills anvil, after it wrote its state file, when the service dies by SIGKILL', async () => {
    const dir = makeTempDir();
    const stateFile = join(dir, 'anvil-state.json');
    const recipient = randomAddress();
    const { child, info } = await startChainInChild(dir, stateFile, { to: recipient, amount: 2_468n });
    const recorded = readPidFile(stateFile);
    try {
      expect(isRunning(info.pid)).toBe(true);
      expect(existsSync(stateFile)).toBe(false); // anvil writes it only as it exits

      await sigkill(child);
      const goneAfterMs = await waitUntilGone(info.pid, 5_000);
      expect(goneAfterMs, `anvil pid ${info.pid} still running 5 s after its service was SIGKILLed`).toBeDefined();
      // Ended with SIGTERM, not SIGKILL: the chain was written out.
      expect(statSync(stateFile).size).toBeGreaterThan(0);
      // The pid file named that anvil and its guardian, which is gone too.
      expect(recorded).toMatchObject({ pid: info.pid, ownerPid: child.pid, stateFile });
      expect(await waitUntilGone(recorded!.guardianPid!, 2_000)).toBeDefined();
    } finally {
      killQuietly(info.pid);
      killQuietly(recorded?.guardianPid);
    }

    const next = await startDevChain({ stateFile, silent: true, fundAccounts: 0 });
    try {
      expect(next.restored).toBe(true);
      expect(await usdcBalance(next.rpcUrl, recipient)).toBe(2_468n);
    } finally {
      await next.stop();
    }
  }, 30_000);

  it('a start on a state file ends the anvil still running on it, which hands over its chain', async () => {
    const stateFile = join(makeTempDir(), 'anvil-state.json');
    const recipient = randomAddress();
    const first = await startDevChain({ stateFile, silent: true, fundAccounts: 1 });
    let second: DevChain | undefined;
    try {
      await mintUsdc(first, recipient, 1_357n);
      // Orphan first's anvil: its guardian dies without a word (SIGKILL), anvil keeps running.
      const { guardianPid } = readPidFile(stateFile)!;
      expect(guardianPid).toBeGreaterThan(0);
      process.kill(guardianPid!, 'SIGKILL');
      expect(await waitUntilGone(guardianPid!, 2_000)).toBeDefined();
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(isRunning(first.pid)).toBe(true);
      expect(await usdcBalance(first.rpcUrl, recipient)).toBe(1_357n);
      expect(existsSync(stateFile)).toBe(false);

      second = await startDevChain({ stateFile, silent: true, fundAccounts: 1 });
      expect(isRunning(first.pid)).toBe(false);
      await expect(usdcBalance(first.rpcUrl, recipient)).rejects.toThrow();
      expect(second.pid).not.toBe(first.pid);
      // The stale anvil was stopped with SIGTERM and wrote the state the new one loaded.
      expect(second.restored).toBe(true);
      expect(await usdcBalance(second.rpcUrl, recipient)).toBe(1_357n);
      expect(readPidFile(stateFile)).toMatchObject({ pid: second.pid, ownerPid: process.pid, stateFile });

      await second.stop();
      expect(existsSync(pidFilePath(stateFile))).toBe(false);
      expect(isRunning(second.pid)).toBe(false);
    } finally {
      killQuietly(first.pid);
      await second?.stop();
      await first.stop();
    }
  }, 30_000);

  it('stop() still ends anvil, with its state written, when the guardian was killed on its own', async () => {
    const stateFile = join(makeTempDir(), 'anvil-state.json');
    const chain = await startDevChain({ stateFile, silent: true, fundAccounts: 1 });
    try {
      const { guardianPid } = readPidFile(stateFile)!;
      process.kill(guardianPid!, 'SIGKILL');
      expect(await waitUntilGone(guardianPid!, 2_000)).toBeDefined();
      expect(isRunning(chain.pid)).toBe(true);

      await chain.stop();
      expect(isRunning(chain.pid)).toBe(false);
      expect(statSync(stateFile).size).toBeGreaterThan(0);
      expect(existsSync(pidFilePath(stateFile))).toBe(false);
    } finally {
      killQuietly(chain.pid);
    }
  });

  it.runIf(process.platform === 'linux')(
    'a start also ends an anvil on its state file that has no pid file (Linux: found in /proc)',
    async () => {
      const stateFile = join(makeTempDir(), 'anvil-state.json');
      const port = await pickFreePort();
      const rpcUrl = `http://127.0.0.1:${port}`;
      // What an earlier version left behind: anvil spawned directly, no guardian, no pid file.
      const orphan = spawn(
        resolveAnvilBinary(),
        ['--chain-id', '8453', '--host', '127.0.0.1', '--port', String(port), '--silent', '--state', stateFile],
        { stdio: 'ignore', detached: true },
      );
      orphan.unref();
      const orphanPid = orphan.pid!;
      let chain: DevChain | undefined;
      try {
        await waitForRpc(rpcUrl, 10_000);
        const holder = randomAddress();
        await createTestClient({ mode: 'anvil', transport: http(rpcUrl) }).setBalance({ address: holder, value: 123_456n });
        expect(existsSync(pidFilePath(stateFile))).toBe(false);

        chain = await startDevChain({ stateFile, silent: true, fundAccounts: 0 });
        expect(isRunning(orphanPid)).toBe(false);
        expect(chain.pid).not.toBe(orphanPid);
        expect(await createPublicClient({ transport: http(chain.rpcUrl) }).getBalance({ address: holder })).toBe(123_456n);
      } finally {
        killQuietly(orphanPid);
        await chain?.stop();
      }
    },
    30_000,
  );

  it('leaves alone a live process in the pid file that is not an anvil on this state file', async () => {
    const dir = makeTempDir();
    const stateFile = join(dir, 'anvil-state.json');
    // A recycled pid: some other process, here even with a --state argument for another file.
    const decoy = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)', '--', '--state', join(dir, 'other.json')], {
      stdio: 'ignore',
    });
    const decoyPid = decoy.pid!;
    writePidFile({ pid: decoyPid, ownerPid: decoyPid, port: 1, stateFile, startedAt: new Date().toISOString() });
    let chain: DevChain | undefined;
    try {
      chain = await startDevChain({ stateFile, silent: true, fundAccounts: 0 });
      expect(isRunning(decoyPid)).toBe(true);
      expect(readPidFile(stateFile)?.pid).toBe(chain.pid);
      await chain.stop();
      expect(existsSync(pidFilePath(stateFile))).toBe(false);
    } finally {
      decoy.kill('SIGKILL');
      await chain?.stop();
    }
  }, 30_000);
});
