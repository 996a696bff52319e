/**
 * DbChannelStorage (src/payments/channels/storage.ts), the x402 batch-settlement `ChannelStorage` on
 * this service's database, on both databases it runs on: a throwaway Postgres database (DATABASE_URL,
 * or the machine's 127.0.0.1:5432) and an embedded PGlite. Read, list, create, update, delete; what a
 * callback that throws leaves (nothing); the stored JSON against the package's own file storage; and
 * concurrent updaters from two storages on two connection pools, which must serialise.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Channel } from '@x402/evm/batch-settlement/server';
import { FileChannelStorage } from '@x402/evm/batch-settlement/server/file-storage';
import { eq, sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, rowsOf, withTransaction, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { paymentChannels } from '../../src/db/schema.js';
import { DbChannelStorage, SETTLER_HOLD_PREFIX } from '../../src/payments/channels/storage.js';
import { openPgliteDatabase } from '../helpers/pglite.js';
import { scratchDatabase, type ScratchDatabase } from '../helpers/service-process.js';

const PAYER = '0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266';
const RECEIVER = '0x90F79bf6EB2c4f870365E785982E1f101E93b906';
const OTHER_RECEIVER = '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65';
const AUTHORIZER = '0x14dC79964da2C08b23698B3D3cc7Ca32193d9955';
const USDC = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913';

const newChannelId = (): `0x${string}` => `0x${randomBytes(32).toString('hex')}`;

/** A channel record as the scheme writes one (amounts as decimal strings of atomic units). */
function channelRecord(channelId: string, overrides: Partial<Channel> = {}): Channel {
  return {
    channelId,
    channelConfig: {
      payer: PAYER,
      payerAuthorizer: PAYER,
      receiver: RECEIVER,
      receiverAuthorizer: AUTHORIZER,
      token: USDC,
      withdrawDelay: 900,
      salt: `0x${'00'.repeat(32)}`,
    },
    chargedCumulativeAmount: '0',
    signedMaxClaimable: '1000',
    signature: `0x${'ab'.repeat(65)}`,
    balance: '20000',
    totalClaimed: '0',
    withdrawRequestedAt: 0,
    refundNonce: 0,
    onchainSyncedAt: 1_795_989_000_000,
    lastRequestTimestamp: 1_795_989_000_123,
    ...overrides,
  };
}

/** The charged amount plus one, as the scheme's `onBeforeSettle` does for a voucher. */
const increment = (current: Channel | undefined): Channel | undefined =>
  current && { ...current, chargedCumulativeAmount: (BigInt(current.chargedCumulativeAmount) + 1n).toString() };

interface Backend {
  /** The database the storages run on, migrated. */
  database: Database;
  /** A second, independent handle on the same database (Postgres: its own pool; PGlite: the same instance, it has one connection). */
  second: Database;
  destroy(): Promise<void>;
}

async function postgresBackend(): Promise<Backend> {
  const scratch: ScratchDatabase = await scratchDatabase('channels');
  const database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 10 });
  await runMigrations(database);
  const second = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 10 });
  return {
    database,
    second,
    destroy: async () => {
      await Promise.allSettled([database.close(), second.close()]);
      await scratch.drop();
    },
  };
}

async function pgliteBackend(): Promise<Backend> {
  const { database, destroy } = await openPgliteDatabase();
  return { database, second: database, destroy };
}

describe.each([
  ['Postgres', postgresBackend],
  ['PGlite', pgliteBackend],
] as const)('DbChannelStorage on %s', (_name, open) => {
  let backend: Backend;
  let storage: DbChannelStorage;
  const rawRow = async (id: string) =>
    (await backend.database.db.select().from(paymentChannels).where(eq(paymentChannels.channelId, id.toLowerCase())))[0];
  const rowCount = async () => Number(rowsOf<{ n: string }>(await backend.database.db.execute(sql`select count(*) as n from payment_channels`))[0]!.n);

  beforeAll(async () => {
    backend = await open();
    storage = new DbChannelStorage(backend.database.db);
  }, 60_000);
  afterAll(async () => backend?.destroy());

  it('reads nothing for a channel never stored', async () => {
    expect(await storage.get(newChannelId())).toBeUndefined();
  });

  it('creates a channel, reads it back equal, keyed lowercase with its payer and receiver', async () => {
    const id = newChannelId().replace(/[a-f]/g, (c) => c.toUpperCase()).replace(/^0X/, '0x');
    const record = channelRecord(id, { pendingRequest: { pendingId: 'p-1', signedMaxClaimable: '1000', expiresAt: 1_795_989_005_000 } });
    const result = await storage.updateChannel(id, (current) => (current ? current : record));
    expect(result).toEqual({ channel: record, status: 'updated' });
    expect(await storage.get(id)).toEqual(record);
    expect(await storage.get(id.toLowerCase())).toEqual(record);
    const row = await rawRow(id);
    expect(row).toMatchObject({ channelId: id.toLowerCase(), payer: PAYER.toLowerCase(), receiver: RECEIVER.toLowerCase() });
    expect(row!.updatedAt).toBeInstanceOf(Date);
  });

  it('stores the record as the JSON the package\'s own FileChannelStorage writes', async () => {
    const id = newChannelId();
    // As the scheme leaves it after a settle: pendingRequest set to undefined (dropped by JSON), big amounts as strings.
    const record = { ...channelRecord(id, { balance: '340282366920938463463374607431768211455', chargedCumulativeAmount: '123456789012345678901234567890' }), pendingRequest: undefined };
    await storage.updateChannel(id, () => record);
    const dir = mkdtempSync(path.join(tmpdir(), 'te-channels-'));
    try {
      const files = new FileChannelStorage({ directory: dir });
      await files.updateChannel(id, () => record);
      const fromFile: unknown = JSON.parse(readFileSync(path.join(dir, 'server', `${id}.json`), 'utf8'));
      const stored = rowsOf<{ json: string }>(await backend.database.db.execute(sql`select channel::text as json from payment_channels where channel_id = ${id}`))[0]!.json;
      expect(JSON.parse(stored)).toEqual(fromFile);
      expect(JSON.parse(stored)).not.toHaveProperty('pendingRequest');
      expect(JSON.parse(stored).balance).toBe('340282366920938463463374607431768211455');
      expect(await storage.get(id)).toEqual(await files.get(id));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('updates a stored channel from its current record', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '5000' }));
    const before = (await rawRow(id))!.updatedAt;
    let seen: Channel | undefined;
    const result = await storage.updateChannel(id, (current) => {
      seen = current;
      return { ...current!, chargedCumulativeAmount: '6000', totalClaimed: '5000' };
    });
    expect(seen?.chargedCumulativeAmount).toBe('5000');
    expect(result.status).toBe('updated');
    expect(await storage.get(id)).toMatchObject({ chargedCumulativeAmount: '6000', totalClaimed: '5000' });
    expect((await rawRow(id))!.updatedAt.getTime()).toBeGreaterThanOrEqual(before.getTime());
  });

  it('reports unchanged, and writes nothing, when the callback returns the current record', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id));
    const before = await rawRow(id);
    const result = await storage.updateChannel(id, (current) => current);
    expect(result).toEqual({ channel: before!.channel, status: 'unchanged' });
    expect(await rawRow(id)).toEqual(before);
  });

  it('leaves no row behind when the callback declines to create a channel', async () => {
    const rows = await rowCount();
    const id = newChannelId();
    expect(await storage.updateChannel(id, (current) => current)).toEqual({ channel: undefined, status: 'unchanged' });
    expect(await storage.updateChannel(id, () => undefined)).toEqual({ channel: undefined, status: 'unchanged' });
    expect(await rawRow(id)).toBeUndefined();
    expect(await rowCount()).toBe(rows);
  });

  it('deletes a channel when the callback returns undefined', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id));
    expect(await storage.updateChannel(id, () => undefined)).toEqual({ channel: undefined, status: 'deleted' });
    expect(await storage.get(id)).toBeUndefined();
    expect(await rawRow(id)).toBeUndefined();
    // and can be created again afterwards
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '1' }));
    expect((await storage.get(id))?.chargedCumulativeAmount).toBe('1');
  });

  it('rolls back when the callback throws: the stored record is unchanged, a new channel is not created', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '7000' }));
    const before = await rawRow(id);
    await expect(
      storage.updateChannel(id, () => {
        throw new Error('callback failed');
      }),
    ).rejects.toThrow('callback failed');
    expect(await rawRow(id)).toEqual(before);

    const fresh = newChannelId();
    await expect(
      storage.updateChannel(fresh, () => {
        throw new Error('callback failed');
      }),
    ).rejects.toThrow('callback failed');
    expect(await rawRow(fresh)).toBeUndefined();
    // the lock was released with the rollback: the next update runs at once
    expect((await storage.updateChannel(id, increment)).channel?.chargedCumulativeAmount).toBe('7001');
  });

  it('refuses a record of another channel and an id that is not a bytes32, changing nothing', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id));
    const before = await rawRow(id);
    await expect(storage.updateChannel(id, () => channelRecord(newChannelId()))).rejects.toThrow(/record of channel/);
    expect(await rawRow(id)).toEqual(before);
    await expect(storage.get('0x1234')).rejects.toThrow(/invalid batch-settlement channel id/);
    await expect(storage.updateChannel('not-a-channel', () => undefined)).rejects.toThrow(/invalid batch-settlement channel id/);
  });

  it('lists every stored channel by id, or only those of one receiver', async () => {
    const mine = newChannelId();
    const theirs = newChannelId();
    await storage.updateChannel(mine, () => channelRecord(mine));
    await storage.updateChannel(theirs, () => channelRecord(theirs, { channelConfig: { ...channelRecord(theirs).channelConfig, receiver: OTHER_RECEIVER } }));
    const all = await storage.list();
    const keys = all.map((c) => c.channelId.toLowerCase());
    expect(keys).toEqual([...keys].sort()); // by channel id, case aside (ids are hex)
    expect(all.map((c) => c.channelId)).toEqual(expect.arrayContaining([mine, theirs]));
    expect(all).toHaveLength(await rowCount());

    const scoped = await new DbChannelStorage(backend.database.db, { receiver: RECEIVER }).list();
    expect(scoped.map((c) => c.channelId)).toContain(mine);
    expect(scoped.map((c) => c.channelId)).not.toContain(theirs);
    expect(scoped.every((c) => c.channelConfig.receiver === RECEIVER)).toBe(true);
    expect((await new DbChannelStorage(backend.database.db, { receiver: OTHER_RECEIVER.toLowerCase() }).list()).map((c) => c.channelId)).toEqual([theirs]);
  });

  it('takes back the charge of a voucher inside the caller’s transaction, only if it was charged and not claimed', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '5000', totalClaimed: '2000' }));
    expect(await storage.chargedThrough(id, 5000n)).toBe(true);
    expect(await storage.chargedThrough(id, 6000n)).toBe(false); // a voucher of 6000 was never charged
    expect(await storage.chargedThrough(newChannelId(), 1000n)).toBe(false);

    // Not charged: nothing changes.
    expect(await withTransaction(backend.database.db, (tx) => storage.uncharge(tx, id, 6000n, 1000n))).toBe(false);
    expect((await storage.get(id))!.chargedCumulativeAmount).toBe('5000');
    // Charged: the price comes off the charged total, in the caller's transaction (rolled back with it).
    await expect(
      withTransaction(backend.database.db, async (tx) => {
        expect(await storage.uncharge(tx, id, 5000n, 1000n)).toBe(true);
        throw new Error('the refund failed after the uncharge');
      }),
    ).rejects.toThrow('the refund failed');
    expect((await storage.get(id))!.chargedCumulativeAmount).toBe('5000');
    expect(await withTransaction(backend.database.db, (tx) => storage.uncharge(tx, id, 5000n, 1000n))).toBe(true);
    expect((await storage.get(id))!.chargedCumulativeAmount).toBe('4000');
    // A charge already claimed on chain cannot be taken back: refused, nothing changes.
    await storage.updateChannel(id, (c) => c && { ...c, totalClaimed: '4000' });
    await expect(withTransaction(backend.database.db, (tx) => storage.uncharge(tx, id, 4000n, 1000n))).rejects.toThrow(/already claimed/);
    expect((await storage.get(id))!.chargedCumulativeAmount).toBe('4000');
  });

  it('answers whether a voucher was charged, ending the channel’s reservation in the same step when it was not', async () => {
    const id = newChannelId();
    const pendingRequest = { pendingId: 'req-1', signedMaxClaimable: '6000', expiresAt: Date.now() + 60_000 };
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '5000', pendingRequest }));
    // Charged through 5000: true, the reservation stays (the request that holds it answers for it).
    expect(await storage.chargedElseRelease(id, 5000n)).toBe(true);
    expect((await storage.get(id))!.pendingRequest).toEqual(pendingRequest);
    // The voucher of 6000 was not charged: false, and the reservation is gone with that answer.
    expect(await storage.chargedElseRelease(id, 6000n)).toBe(false);
    const after = (await storage.get(id))!;
    expect(after.pendingRequest).toBeUndefined();
    expect(after.chargedCumulativeAmount).toBe('5000');
    expect(await storage.chargedElseRelease(newChannelId(), 1000n)).toBe(false); // never stored: nothing created
  });

  it('never ends the settler’s refund hold when it ends a request’s reservation', async () => {
    // The sweep ends a dead request's reservation once it resolved its payment. Had it ended the
    // settler's hold instead (the soak found it: the sweep resolved a payment, the settler then held
    // the channel to refund it, and the sweep's release came after), a call could be charged on a
    // channel whose remainder was going back to the payer, and its charge was never claimed.
    const id = newChannelId();
    const hold = { pendingId: `${SETTLER_HOLD_PREFIX}abc`, signedMaxClaimable: '5000', expiresAt: Date.now() + 60_000 };
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '5000', pendingRequest: hold }));
    await storage.releaseRequest(id);
    expect((await storage.get(id))!.pendingRequest).toEqual(hold);
    expect(await storage.chargedElseRelease(id, 6000n)).toBe(false);
    expect((await storage.get(id))!.pendingRequest).toEqual(hold);
    // A request's reservation is ended.
    const request = { pendingId: 'req-2', signedMaxClaimable: '6000', expiresAt: Date.now() + 60_000 };
    await storage.updateChannel(id, (c) => c && { ...c, pendingRequest: request });
    await storage.releaseRequest(id);
    expect((await storage.get(id))!.pendingRequest).toBeUndefined();
  });

  /*
   * Two storages on two connection pools (Postgres; PGlite has one connection, so there the two
   * storages share it) each run 50 increments of one channel's charged amount at once: 100 in all.
   *
   * Without the row lock this fails: updateChannel would read `current` with a plain SELECT in one
   * transaction and write `current + 1` in it, and under READ COMMITTED two such transactions that
   * both read before either commits both see the same value k and both write k + 1: a lost update,
   * and with up to 20 transactions in flight the final value ends far below 100. With SELECT … FOR
   * UPDATE the second reader waits for the first to commit and then reads k + 1 (Postgres re-reads
   * the locked row's newest version), so every increment counts. (Checked once by hand: without
   * `FOR UPDATE` the Postgres run ends at 4, not 100. On PGlite the single connection runs the
   * transactions one at a time anyway, so there it passes either way.)
   */
  it('serialises concurrent updaters from two storages on separate connections: 2 × 50 increments make 100', { timeout: 60_000 }, async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '0' }));
    const a = new DbChannelStorage(backend.database.db);
    const b = new DbChannelStorage(backend.second.db);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? a : b).updateChannel(id, increment)));
    expect(results.every((r) => r.status === 'updated')).toBe(true);
    expect((await a.get(id))?.chargedCumulativeAmount).toBe('100');
    // every updater saw a different predecessor: the values it wrote are exactly 1..100
    expect(results.map((r) => Number(r.channel!.chargedCumulativeAmount)).sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });

  it('serialises concurrent creators of a channel not stored yet: exactly one creates it, the others update it', { timeout: 60_000 }, async () => {
    const id = newChannelId();
    const a = new DbChannelStorage(backend.database.db);
    const b = new DbChannelStorage(backend.second.db);
    let created = 0;
    const createOrIncrement = (current: Channel | undefined): Channel => {
      if (current) return increment(current)!;
      created++;
      return channelRecord(id, { chargedCumulativeAmount: '1' });
    };
    await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).updateChannel(id, createOrIncrement)));
    expect(created).toBe(1);
    expect((await storage.get(id))?.chargedCumulativeAmount).toBe('60');
  });
});

/**
 * The lock's edge cases, driven step by step from a separate connection (Postgres only: PGlite has
 * a single connection, so nothing can hold a lock while another transaction waits).
 */
describe('DbChannelStorage row lock on Postgres, step by step', () => {
  let backend: Backend;
  let storage: DbChannelStorage;
  let other: pg.Client;

  beforeAll(async () => {
    backend = await postgresBackend();
    storage = new DbChannelStorage(backend.database.db);
    other = new pg.Client({ connectionString: backend.database.url! });
    await other.connect();
  }, 60_000);
  afterAll(async () => {
    await other?.end();
    await backend?.destroy();
  });

  const settledWithin = async (p: Promise<unknown>, ms: number) => {
    let settled = false;
    void p.then(
      () => (settled = true),
      () => (settled = true),
    );
    await new Promise((r) => setTimeout(r, ms));
    return settled;
  };

  it('an update waits for another transaction holding the row, then runs on what it committed', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '10' }));
    await other.query('begin');
    await other.query('select 1 from payment_channels where channel_id = $1 for update', [id]);
    const waiting = storage.updateChannel(id, increment);
    expect(await settledWithin(waiting, 300)).toBe(false);
    await other.query(`update payment_channels set channel = jsonb_set(channel, '{chargedCumulativeAmount}', '"20"') where channel_id = $1`, [id]);
    await other.query('commit');
    expect((await waiting).channel?.chargedCumulativeAmount).toBe('21');
  });

  it('an update of a channel being created elsewhere waits for that insert and then sees the channel', async () => {
    const id = newChannelId();
    await other.query('begin');
    await other.query('insert into payment_channels (channel_id, channel, payer, receiver) values ($1, $2, $3, $4)', [
      id,
      JSON.stringify(channelRecord(id, { chargedCumulativeAmount: '30' })),
      PAYER.toLowerCase(),
      RECEIVER.toLowerCase(),
    ]);
    let seen: Channel | undefined | 'not called' = 'not called';
    const waiting = storage.updateChannel(id, (current) => {
      seen = current;
      return increment(current);
    });
    expect(await settledWithin(waiting, 300)).toBe(false);
    await other.query('commit');
    expect((await waiting).channel?.chargedCumulativeAmount).toBe('31');
    expect(seen).toMatchObject({ chargedCumulativeAmount: '30' });
  });

  it('an update that waited on a row its holder then deleted sees no channel (and creates it anew under a fresh lock)', async () => {
    const id = newChannelId();
    await storage.updateChannel(id, () => channelRecord(id, { chargedCumulativeAmount: '40' }));
    await other.query('begin');
    await other.query('select 1 from payment_channels where channel_id = $1 for update', [id]);
    let seen: Channel | undefined | 'not called' = 'not called';
    const waiting = storage.updateChannel(id, (current) => {
      seen = current;
      return current ? increment(current) : channelRecord(id, { chargedCumulativeAmount: '1' });
    });
    expect(await settledWithin(waiting, 300)).toBe(false);
    await other.query('delete from payment_channels where channel_id = $1', [id]);
    await other.query('commit');
    expect(await waiting).toMatchObject({ status: 'updated', channel: { chargedCumulativeAmount: '1' } });
    expect(seen).toBeUndefined();
  });

  it('a placeholder is never visible to readers, and one rolled back leaves the channel to the next updater', async () => {
    const id = newChannelId();
    // Another transaction's uncommitted placeholder for the same channel: the storage's own insert
    // waits for it, with its transaction open; readers see no channel meanwhile.
    await other.query('begin');
    await other.query('insert into payment_channels (channel_id) values ($1)', [id]);
    const waiting = storage.updateChannel(id, (current) => current ?? channelRecord(id));
    expect(await settledWithin(waiting, 200)).toBe(false);
    expect(await storage.get(id)).toBeUndefined();
    expect((await storage.list()).map((c) => c.channelId)).not.toContain(id);
    await other.query('rollback'); // the other placeholder is gone: the storage inserts its own
    expect(await waiting).toMatchObject({ status: 'updated', channel: { channelId: id } });
    expect(await storage.get(id)).toMatchObject({ channelId: id });
  });
});
