/**
 * Acceptance of the money path: the crash-point soak (bench/soak/), short. The real service
 * (src/server.ts, ROLE=all) on its own Postgres database and a real anvil, killed with SIGKILL
 * at least 20 times under a seeded random paid workload (random delays, and named crash points:
 * right after a payment settled on chain or a channel payment's voucher was charged, after the
 * micro-fee batch settler's and the channel settler's transactions); after each kill the restarted
 * service must resolve everything, and the books must hold to the atomic unit. Three payers pay
 * `exact`, two more pay their fixed-price calls over x402 batch-settlement channels; at the end the
 * channels are drained (claimed, settled, booked, refunded) and checked once more.
 *
 * Always Postgres (DATABASE_URL, or the machine's 127.0.0.1:5432), in both CI passes; no
 * Postgres = the file FAILS. SOAK_SEED / SOAK_ITERATIONS override the defaults; the full run is
 * `npm run soak -- --iterations 200`.
 */
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { POSTGRES_URL } from './helpers/service-process.js';
import { formatReport } from '../bench/soak/report.js';
import { runSoak } from '../bench/soak/run.js';

const SEED = Number(process.env.SOAK_SEED ?? 20_251);
const ITERATIONS = Number(process.env.SOAK_ITERATIONS ?? 20);

describe('crash-point soak', () => {
  it(`${ITERATIONS} SIGKILLs of the service under a paid workload lose no atomic unit and leave nothing half done`, { timeout: 600_000 }, async () => {
    const report = await runSoak({
      iterations: ITERATIONS,
      seed: SEED,
      databaseUrl: POSTGRES_URL,
      payers: 3,
      channelPayers: 2,
      killDelayMaxMs: 2000,
      workloadMaxMs: 2500,
      taskTimeoutSeconds: [2, 4],
      quiesceTimeoutMs: 90_000,
      rerun: (n) => `SOAK_SEED=${SEED} SOAK_ITERATIONS=${n} npx vitest run test/soak.test.ts`,
    });
    const text = formatReport(report);
    console.log(text);
    expect(report.kills.total, text).toBeGreaterThanOrEqual(Math.min(20, ITERATIONS));
    // the channel lane paid calls that were served, and the channels were drained at the end
    expect(report.books.channels?.payers.every((p) => p.bookedCalls > 0), text).toBe(true);
    expect(report.drain?.drained, text).toBe(true);
    expect(report.violations, text).toEqual([]);
    expect(report.lostWorst, text).toBe(0n);
    expect(report.lostFinal, text).toBe(0n);
    expect(report.unpaidFinal, text).toBe(0n);
    expect(report.records.every((r) => r.quiesced && r.problems.length === 0), text).toBe(true);
    expect(report.requests.serverErrors, text).toEqual([]);
    rmSync(report.logDir, { recursive: true, force: true }); // kept (and printed) when the soak failed
  });
});
