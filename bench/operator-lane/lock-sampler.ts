/**
 * The lane's row lock seen from Postgres, for processes the bench cannot instrument (the API
 * processes): `pg_stat_activity` of the scratch database sampled every few ms. A lane turn runs
 * `insert … on conflict do nothing`, `select … for update`, `update "chain_nonces" …`, the send,
 * COMMIT; from the `select … for update`'s return to COMMIT the backend holds the wallet's row lock
 * (see QUERY for how a sample tells holders from waiters). The share of samples with a holder is the share of time the row was locked;
 * divided by the operator transactions of the window it gives the mean turn. Sampling misses turns
 * shorter than its interval only in proportion, not in bias.
 */
import pg from 'pg';

export interface LockFigures {
  samples: number;
  /** Mean number of backends holding a chain_nonces row lock (≤ number of wallets). */
  meanHolders: number;
  /** Share of samples in which at least one backend held one. */
  heldShare: number;
  /** Mean number of backends waiting for one. */
  meanWaiters: number;
}

/**
 * Holders: a backend in a transaction whose last statement is the turn's `update` (active or idle
 * in transaction: the send runs between it and COMMIT), or its `select … for update` done or running
 * without waiting (the lock is taken when it returns; the `update` follows). Waiters: any statement
 * on chain_nonces waiting on a lock (the `select … for update`, or the `insert … on conflict` behind
 * the holder's uncommitted update).
 */
const QUERY = `
  with lane as (
    select query, state, wait_event_type from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and xact_start is not null and query ilike '%"chain_nonces"%'
  )
  select
    count(*) filter (where wait_event_type is distinct from 'Lock' and state in ('active', 'idle in transaction')
                       and (query ilike 'update "chain_nonces"%' or query ilike 'select%for update%'))::int as holders,
    count(*) filter (where wait_event_type = 'Lock')::int as waiters
  from lane`;

export class LockSampler {
  private client: pg.Client;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private samples: Array<{ holders: number; waiters: number }> = [];

  constructor(
    databaseUrl: string,
    private readonly intervalMs = 3,
  ) {
    this.client = new pg.Client({ connectionString: databaseUrl });
  }

  async open(): Promise<this> {
    await this.client.connect();
    return this;
  }

  start(): void {
    this.samples = [];
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const { rows } = await this.client.query<{ holders: number; waiters: number }>(QUERY);
        this.samples.push(rows[0]!);
        await new Promise((r) => setTimeout(r, this.intervalMs));
      }
    })();
  }

  async stop(): Promise<LockFigures> {
    this.running = false;
    await this.loop;
    const n = this.samples.length;
    const sum = (f: (s: { holders: number; waiters: number }) => number) => this.samples.reduce((a, s) => a + f(s), 0);
    return {
      samples: n,
      meanHolders: n ? sum((s) => s.holders) / n : NaN,
      heldShare: n ? sum((s) => (s.holders > 0 ? 1 : 0)) / n : NaN,
      meanWaiters: n ? sum((s) => s.waiters) / n : NaN,
    };
  }

  async close(): Promise<void> {
    this.running = false;
    await this.loop.catch(() => undefined);
    await this.client.end();
  }
}
