import type { FastifyInstance } from 'fastify';
import { privateKeyToAccount } from 'viem/accounts';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../chain/constants.js';
import { chainTarget } from '../../chain/wallets.js';
import { allowPrivateUrls, type Config } from '../../config.js';
import { formatUsdc } from '../../payments/prices.js';
import { BuiltinAgentServer } from './agent-server.js';
import { BUILTIN_AGENTS, BUILTIN_LLM_AGENT, registrationOf } from './catalog.js';
import { ensureAgent, retireAgent, type EnsuredAgent } from './registry.js';

/**
 * Agents to hire on the first run (dev mode only: the embedded chain). `npm start` serves the
 * catalog's agents on a loopback server of its own process and registers them through the agents
 * service, owned by one dev account; with an LLM endpoint configured it adds a hosted LLM agent.
 * A service on a real chain (CHAIN_RPC_URL) never calls this (src/server.ts) and it refuses to run there.
 */

/** The dev account that owns the built-in agents and receives their pay: anvil account 0, which clients do not use. */
export const BUILTIN_OWNER = ANVIL_ACCOUNTS[DEV_ROLES.minter]!;

/** Default pause of each simulated work step (two or three steps an agent: a task takes 1-2 s). */
export const BUILTIN_STEP_MS = 400;

export interface BuiltinAgents {
  /** The agents as registered (the banner lists them). */
  agents: EnsuredAgent[];
  /** Why the hosted LLM agent is absent, when it is. */
  hostedNote: string | null;
  /** The start-up banner's lines about them. */
  banner: string[];
  /** Stops the loopback server (after the dispatcher has stopped). */
  stop(): Promise<void>;
}

/** Whether (and which) hosted LLM agent this configuration calls for. */
export function hostedAgentPlan(config: Config): { enabled: true; model: string } | { enabled: false; note: string } {
  if (config.LLM_BASE_URL) return { enabled: true, model: config.LLM_MODEL };
  return {
    enabled: false,
    note: config.LLM_API_KEY
      ? 'Hosted LLM agent: not registered, LLM_API_KEY is set without LLM_BASE_URL (set it too, e.g. https://api.openai.com/v1).'
      : 'Hosted LLM agent: not registered (set LLM_BASE_URL, and LLM_API_KEY if the endpoint needs one, to add one).',
  };
}

/** Starts the built-in agents' server and registers (or refreshes) every built-in agent. */
export async function startBuiltinAgents(app: FastifyInstance, opts: { stepMs?: number } = {}): Promise<BuiltinAgents> {
  const { config } = app;
  if (config.CHAIN_RPC_URL) throw new Error('built-in demo agents are for the embedded dev chain only, never a real chain');
  if (!allowPrivateUrls(config)) {
    // their webhooks are on loopback, which the registry and the dispatcher then refuse
    const banner = ['Built-in agents: not registered, ALLOW_PRIVATE_URLS=false forbids agents on loopback.'];
    return { agents: [], hostedNote: null, banner, stop: async () => undefined };
  }
  const owner = privateKeyToAccount(BUILTIN_OWNER.privateKey);
  const log = app.log.child({ component: 'builtin-agents' });
  const server = await new BuiltinAgentServer({
    agents: BUILTIN_AGENTS,
    owner,
    chainId: chainTarget(config).chainId,
    stepMs: opts.stepMs ?? BUILTIN_STEP_MS,
    log,
  }).start();
  try {
    const registered: EnsuredAgent[] = [];
    // one at a time, in the banner's order
    for (const agent of BUILTIN_AGENTS) {
      registered.push(await ensureAgent(app.services.agents, app.db, owner.address, registrationOf(agent, owner.address, server.runtimeOf(agent))));
    }
    const hosted = hostedAgentPlan(config);
    if (hosted.enabled) {
      const runtime = { kind: 'hosted_llm', model: hosted.model, system_prompt: BUILTIN_LLM_AGENT.systemPrompt, toolsets: [] };
      registered.push(await ensureAgent(app.services.agents, app.db, owner.address, registrationOf(BUILTIN_LLM_AGENT, owner.address, runtime)));
    } else {
      // registered by an earlier start that had an LLM: out of search until one is configured again
      await retireAgent(app.services.agents, app.db, owner.address, BUILTIN_LLM_AGENT.name);
    }
    log.info({ agents: registered.map((a) => ({ id: a.id, name: a.name, created: a.created })) }, 'built-in agents ready');
    const hostedNote = hosted.enabled ? null : hosted.note;
    return { agents: registered, hostedNote, banner: builtinAgentsBanner({ agents: registered, hostedNote }), stop: () => server.stop() };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** The banner's lines: one per agent with its id, capabilities and price. */
export function builtinAgentsBanner(builtin: Pick<BuiltinAgents, 'agents' | 'hostedNote'>): string[] {
  const nameWidth = Math.max(...builtin.agents.map((a) => a.name.length));
  const price = (a: EnsuredAgent) => formatUsdc(BigInt(a.baseRate));
  const priceWidth = Math.max(...builtin.agents.map((a) => price(a).length));
  return [
    `Built-in agents to hire (dev only; owner and payout: anvil account ${DEV_ROLES.minter} ${BUILTIN_OWNER.address}; price = lowest budget):`,
    ...builtin.agents.map(
      (a) =>
        `  ${a.name.padEnd(nameWidth)}  ${a.id}  ${price(a).padStart(priceWidth)}  ${a.capabilities.join(', ')}${a.availability === 'online' ? '' : '  (offline)'}`,
    ),
    ...(builtin.hostedNote ? [`  ${builtin.hostedNote}`] : []),
  ];
}
