import { and, count, desc, eq, lte, sql, type SQL } from 'drizzle-orm';
import { getAddress } from 'viem';
import type { Clock } from '../clock.js';
import type { Db, Executor } from '../db/client.js';
import { agents, ratings, type AgentRow } from '../db/schema.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import { redactRuntime, validateRuntime } from '../dispatcher/runtimes/index.js';
import { checkPayoutAddress, type PayoutRules } from './payout.js';
import { checkRuntimeUrls } from './runtime-urls.js';
import type {
  AgentProfileT,
  AgentSummaryT,
  OwnedAgentT,
  RegisterAgentInput,
  SearchAgentsInput,
  UpdateAgentInput,
} from './schemas.js';

const RECENT_REVIEWS = 10;

function searchTextOf(name: string, description: string, capabilities: string[]): string {
  // Capabilities twice: a capability word outranks a word of the description.
  return [name, capabilities.join(' '), capabilities.join(' '), description].join('\n');
}

export function ratingOf(row: Pick<AgentRow, 'ratingSum' | 'ratingCount'>): number | null {
  return row.ratingCount === 0 ? null : Math.round((row.ratingSum / row.ratingCount) * 100) / 100;
}

export function toAgentSummary(row: AgentRow): AgentSummaryT {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    capabilities: row.capabilities,
    pricing: { base_rate: row.baseRate.toString(), unit: 'per-task', currency: 'USDC' },
    rating: ratingOf(row),
    ratings_count: row.ratingCount,
    tasks_completed: row.tasksCompleted,
    availability: row.availability as AgentSummaryT['availability'],
    response_time_avg_seconds:
      row.tasksCompleted === 0 ? null : Math.round((row.responseTimeTotalSeconds / row.tasksCompleted) * 10) / 10,
  };
}

function toOwnedAgent(row: AgentRow): OwnedAgentT {
  return {
    ...toAgentSummary(row),
    owner_address: getAddress(row.ownerAddress),
    payout_address: getAddress(row.payoutAddress),
    runtime: redactRuntime(row.runtime),
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

/** What an agent's settings are checked against (from configuration, see createServices). */
export interface AgentRules {
  /** Payout addresses refused (the service's own wallets, USDC) and the optional contract check. */
  payout: PayoutRules;
  /** Whether runtime URLs (webhook url, hosted_llm base_url) may point at loopback/private addresses (dev mode only). */
  allowPrivateUrls: boolean;
}

export class AgentsService {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly rules: AgentRules,
  ) {}

  /** Checks that need I/O (DNS, the chain), done before any row is written or locked. */
  private async checkSettings(input: {
    payout_address?: string | undefined;
    payout_is_contract?: boolean | undefined;
    runtime?: Record<string, unknown> | undefined;
  }): Promise<Record<string, unknown> | undefined> {
    const runtime = input.runtime ? validateRuntime(input.runtime) : undefined;
    if (input.payout_address !== undefined) {
      await checkPayoutAddress(input.payout_address, this.rules.payout, input.payout_is_contract === true);
    }
    if (runtime) {
      await checkRuntimeUrls(runtime, { allowPrivate: this.rules.allowPrivateUrls });
    }
    return runtime;
  }

  async register(owner: string, input: RegisterAgentInput): Promise<OwnedAgentT> {
    const runtime = (await this.checkSettings(input)) ?? {};
    const now = this.clock.now();
    const capabilities = [...new Set(input.capabilities)];
    const [row] = await this.db
      .insert(agents)
      .values({
        id: newId('agent'),
        ownerAddress: owner.toLowerCase(),
        payoutAddress: input.payout_address.toLowerCase(),
        name: input.name,
        description: input.description,
        capabilities,
        searchText: searchTextOf(input.name, input.description, capabilities),
        baseRate: BigInt(input.pricing.base_rate),
        availability: input.availability,
        runtime,
        createdAt: now,
        updatedAt: now,
      })
      .returning();
    return toOwnedAgent(row!);
  }

  /** Owner-only change; availability 'offline' takes the agent out of search and new tasks. */
  async update(owner: string, id: string, patch: UpdateAgentInput): Promise<OwnedAgentT> {
    const runtime = await this.checkSettings(patch);
    return this.db.transaction(async (tx) => {
      const current = await this.ownedForUpdate(tx, owner, id);
      const name = patch.name ?? current.name;
      const description = patch.description ?? current.description;
      const capabilities = patch.capabilities ? [...new Set(patch.capabilities)] : current.capabilities;
      const [row] = await tx
        .update(agents)
        .set({
          name,
          description,
          capabilities,
          searchText: searchTextOf(name, description, capabilities),
          ...(patch.pricing ? { baseRate: BigInt(patch.pricing.base_rate) } : {}),
          ...(patch.payout_address ? { payoutAddress: patch.payout_address.toLowerCase() } : {}),
          ...(patch.availability ? { availability: patch.availability } : {}),
          ...(runtime ? { runtime } : {}),
          updatedAt: this.clock.now(),
        })
        .where(eq(agents.id, id))
        .returning();
      return toOwnedAgent(row!);
    });
  }

  async getOwned(owner: string, id: string): Promise<OwnedAgentT> {
    const row = await this.require(this.db, id);
    if (row.ownerAddress !== owner.toLowerCase()) throw new AppError('forbidden', 'Only the owner may see this agent’s settings');
    return toOwnedAgent(row);
  }

  private async ownedForUpdate(tx: Executor, owner: string, id: string): Promise<AgentRow> {
    const [row] = await tx.select().from(agents).where(eq(agents.id, id)).for('update');
    if (!row) throw new AppError('agent_not_found', `Agent ${id} does not exist`);
    if (row.ownerAddress !== owner.toLowerCase()) throw new AppError('forbidden', 'Only the owner may change this agent');
    return row;
  }

  async require(exec: Executor, id: string): Promise<AgentRow> {
    const [row] = await exec.select().from(agents).where(eq(agents.id, id));
    if (!row) throw new AppError('agent_not_found', `Agent ${id} does not exist`);
    return row;
  }

  async profile(id: string): Promise<AgentProfileT> {
    const row = await this.require(this.db, id);
    const reviews = await this.db
      .select()
      .from(ratings)
      .where(eq(ratings.agentId, id))
      .orderBy(desc(ratings.createdAt), desc(ratings.id))
      .limit(RECENT_REVIEWS);
    return {
      ...toAgentSummary(row),
      recent_reviews: reviews.map((r) => ({
        rating_id: r.id,
        task_id: r.taskId,
        rating: r.rating,
        comment: r.comment,
        submitted_at: r.createdAt.toISOString(),
      })),
      created_at: row.createdAt.toISOString(),
    };
  }

  /**
   * Search: `query` matches capabilities exactly or the name/description/capabilities by
   * Postgres full-text search (websearch syntax), ranked; then rating and price filters.
   */
  async search(input: SearchAgentsInput): Promise<{ agents: AgentSummaryT[]; total: number; page: number; limit: number; has_more: boolean }> {
    const where: SQL[] = [];
    if (input.availability !== 'any') where.push(eq(agents.availability, input.availability));
    let rank: SQL | undefined;
    if (input.query) {
      const tsq = sql`websearch_to_tsquery('english', ${input.query})`;
      const exact = sql`${agents.capabilities} @> array[${input.query.toLowerCase()}]::text[]`;
      where.push(sql`(${agents.searchVector} @@ ${tsq} or ${exact})`);
      rank = sql`(ts_rank(${agents.searchVector}, ${tsq}) + case when ${exact} then 1 else 0 end)`;
    }
    if (input.min_rating !== undefined) {
      where.push(sql`${agents.ratingCount} > 0 and ${agents.ratingSum}::numeric / ${agents.ratingCount} >= ${input.min_rating}`);
    }
    if (input.max_price !== undefined) where.push(lte(agents.baseRate, BigInt(input.max_price)));
    const condition = where.length ? and(...where) : undefined;
    const ratingOrder = sql`case when ${agents.ratingCount} = 0 then 0 else ${agents.ratingSum}::numeric / ${agents.ratingCount} end desc`;
    const order = [...(rank ? [sql`${rank} desc`] : []), ratingOrder, desc(agents.tasksCompleted), agents.id];
    const offset = (input.page - 1) * input.limit;
    const [rows, totals] = await Promise.all([
      this.db.select().from(agents).where(condition).orderBy(...order).limit(input.limit).offset(offset),
      this.db.select({ n: count() }).from(agents).where(condition),
    ]);
    const total = Number(totals[0]?.n ?? 0);
    return {
      agents: rows.map(toAgentSummary),
      total,
      page: input.page,
      limit: input.limit,
      has_more: offset + rows.length < total,
    };
  }
}
