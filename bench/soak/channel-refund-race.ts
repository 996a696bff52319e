/**
 * A reproduction, not a benchmark: the channel settler's idle refund racing a call paid over the
 * same channel (found while extending the crash-point soak to channels; no kill needed). It hit in
 * every run before the settler held the channel while refunding it (payments/channels/settler.ts
 * `refundHeld`); it stays as the check of that.
 *
 *   npx tsx bench/soak/channel-refund-race.ts            (60 calls; exit 1 when the race hit)
 *   npx tsx bench/soak/channel-refund-race.ts 200
 *
 * One service (ROLE=all) on a scratch Postgres database and an anvil chain; the settler runs every
 * 50 ms and refunds a channel idle for 1 s (claims only by refund). One payer with the stock
 * batch-settlement client (bench/soak/wallets.ts: its local state is dropped when the service
 * refunded the channel behind its back) calls a fixed-price route every 0.95–1.15 s, so that calls
 * land while the settler refunds. When a voucher is charged between the refund's snapshot and its
 * transaction, the call is served and booked as owed by the channel, the refund returns that part
 * of the deposit to the payer anyway, and the stored channel (the charge with it) is dropped: the
 * channel invariants of the soak (invariants.ts, final form) then report the booked charge the
 * contract can never pay, and the payer's next vouchers are refused as replayed.
 */
import { sql } from 'drizzle-orm';
import { startDevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, rowsOf } from '../../src/db/client.js';
import { scratchDatabase, serviceEnv, startService } from '../../test/helpers/service-process.js';
import { checkInvariants } from './invariants.js';
import { fundedPayers } from './wallets.js';

async function main(): Promise<number> {
  const rounds = Number(process.argv[2] ?? 60);
  const chain = await startDevChain({ silent: true, fundIndices: [] });
  const scratch = await scratchDatabase('chrace');
  const service = await startService(
    serviceEnv(scratch.url, chain.rpcUrl, {
      ROLE: 'all',
      PUBLIC_BASE_URL: 'http://127.0.0.1:9', // nothing is dispatched
      CHANNEL_SETTLE_INTERVAL_MS: '50',
      CHANNEL_IDLE_REFUND_SECONDS: '1',
      CHANNEL_CLAIM_THRESHOLD: '1000000000',
      CHANNEL_CLAIM_INTERVAL_SECONDS: '3600',
      CHANNEL_DEPOSIT_CALLS: '20',
    }),
  );
  const database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 2 });
  try {
    const payers = await fundedPayers(chain, 0, 100_000_000n, 1);
    const payer = payers[0]!;
    const answers: Record<string, number> = {};
    for (let i = 0; i < rounds; i++) {
      await new Promise((r) => setTimeout(r, 950 + Math.floor(Math.random() * 200)));
      const res = await payer.pay(`${service.baseUrl}/v1/agents?query=x`);
      const code = res.status === 200 ? '' : ` ${((await res.json()) as { error?: { code?: string } }).error?.code ?? ''}`;
      answers[`${res.status}${code}`] = (answers[`${res.status}${code}`] ?? 0) + 1;
    }
    await new Promise((r) => setTimeout(r, 3000)); // the last refund
    const rows = rowsOf<object>(
      await database.db.execute(sql`select status, amount::text, payload->'payload'->'payload'->>'type' as type,
                                           payload->'payload'->'payload'->'voucher'->>'maxClaimableAmount' as cumulative, created_at
                                    from payments where channel_id is not null order by created_at`),
    );
    const inv = await checkInvariants(database.db, { rpcUrl: chain.rpcUrl, payers, agents: [] }, { final: true });
    console.log(`answers ${JSON.stringify(answers)}; client ${JSON.stringify(payer.channel!.stats)}`);
    console.log(`channel payments:\n  ${rows.map((r) => JSON.stringify(r)).join('\n  ')}`);
    console.log(inv.problems.length === 0 ? 'the race did not hit: every channel invariant holds' : `RACE HIT (${inv.lost} atomic units off):\n  ${inv.problems.join('\n  ')}`);
    return inv.problems.length === 0 ? 0 : 1;
  } finally {
    await service.kill();
    await database.close();
    await scratch.drop();
    await chain.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
