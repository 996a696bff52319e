import { and, asc, eq } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { agents } from '../../db/schema.js';
import type { AgentsService } from '../service.js';
import type { RegisterAgentInput } from '../schemas.js';

/**
 * Idempotent registration of the built-in agents: an agent is known by its owner wallet and its
 * name. The first start registers it; every later start on the same database updates it in place
 * (its webhook URL and secret change with each process) instead of adding another. Both go through
 * AgentsService, so the registry's rules (payout address, runtime, URLs) apply as for anyone.
 * A start brings each agent back to its definition in the catalog, online.
 */

export interface EnsuredAgent {
  id: string;
  name: string;
  capabilities: string[];
  baseRate: string;
  availability: 'online' | 'offline';
  /** Whether this start registered it (false: it was there and was updated). */
  created: boolean;
}

/** The oldest agent of `owner` called `name`, if any (owner addresses are stored lower-case). */
export async function findOwnedByName(db: Db, owner: string, name: string): Promise<{ id: string } | undefined> {
  const [row] = await db
    .select({ id: agents.id })
    .from(agents)
    .where(and(eq(agents.ownerAddress, owner.toLowerCase()), eq(agents.name, name)))
    .orderBy(asc(agents.createdAt), asc(agents.id))
    .limit(1);
  return row;
}

/** Registers the agent, or brings the one already registered up to date. */
export async function ensureAgent(service: AgentsService, db: Db, owner: string, input: RegisterAgentInput): Promise<EnsuredAgent> {
  const existing = await findOwnedByName(db, owner, input.name);
  if (!existing) return summary(await service.register(owner, input), true);
  return summary(await service.update(owner, existing.id, input), false);
}

/** Takes an agent of `owner` called `name` out of search, if it exists (a hosted agent whose LLM is no longer configured). */
export async function retireAgent(service: AgentsService, db: Db, owner: string, name: string): Promise<void> {
  const existing = await findOwnedByName(db, owner, name);
  if (existing) await service.update(owner, existing.id, { availability: 'offline' });
}

function summary(agent: { id: string; name: string; capabilities: string[]; pricing: { base_rate: string }; availability: 'online' | 'offline' }, created: boolean): EnsuredAgent {
  return { id: agent.id, name: agent.name, capabilities: agent.capabilities, baseRate: agent.pricing.base_rate, availability: agent.availability, created };
}
