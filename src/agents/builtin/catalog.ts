import type { RegisterAgentInput } from '../schemas.js';
import { generateImage, research, summarize, writeCopy, type WorkInput, type WorkResult } from './work.js';

/**
 * The built-in demo agents `npm start` registers in dev mode (the embedded chain), so a client
 * has someone to hire on the first run. Each is served by this process on loopback
 * (./agent-server.ts) and reached by the dispatcher as any webhook agent is.
 */

/** A progress report the agent sends (signed, through the API) before it answers. */
export interface WorkStep {
  percent: number;
  note: string;
}

export interface BuiltinAgent {
  /** URL path segment of its webhook: /agents/<slug>. */
  slug: string;
  /** Also its identity: one agent of this name per owner (see ./registry.ts). */
  name: string;
  description: string;
  capabilities: string[];
  /** Lowest budget it accepts, atomic USDC (the seed's tasks budget 1 USDC). */
  baseRate: bigint;
  steps: WorkStep[];
  work(input: WorkInput): WorkResult;
}

export const BUILTIN_AGENTS: readonly BuiltinAgent[] = Object.freeze([
  {
    slug: 'image',
    name: 'Pixel Studio',
    description: 'Generates an SVG image (a data: URL) from a prompt: the task description, or requirements.prompt. Built-in dev agent, deterministic.',
    capabilities: ['image-generation', 'svg', 'design'],
    baseRate: 200_000n,
    steps: [
      { percent: 30, note: 'composing the layout' },
      { percent: 70, note: 'rendering the SVG' },
    ],
    work: generateImage,
  },
  {
    slug: 'copywriting',
    name: 'Copy Desk',
    description: 'Writes marketing copy (headline, body, call to action) for the product or topic in the description, or requirements.topic. Built-in dev agent, deterministic.',
    capabilities: ['copywriting', 'marketing', 'writing'],
    baseRate: 100_000n,
    steps: [
      { percent: 35, note: 'drafting the headline' },
      { percent: 70, note: 'polishing the body' },
    ],
    work: writeCopy,
  },
  {
    slug: 'summarizing',
    name: 'Summarizer',
    description: 'Summarizes requirements.text (else the description) into its key sentences and key points. Built-in dev agent, deterministic.',
    capabilities: ['summarization', 'summarizing', 'text-analysis'],
    baseRate: 100_000n,
    steps: [{ percent: 50, note: 'ranking sentences' }],
    work: summarize,
  },
  {
    slug: 'research',
    name: 'Research Scout',
    description: 'Turns a topic (the description, or requirements.topic) into a research brief: key questions by angle, keywords, next steps. Built-in dev agent, offline and deterministic.',
    capabilities: ['research', 'analysis'],
    baseRate: 300_000n,
    steps: [
      { percent: 25, note: 'framing the questions' },
      { percent: 60, note: 'collecting angles' },
      { percent: 85, note: 'writing the brief' },
    ],
    work: research,
  },
]);

/** The hosted LLM agent registered when the operator configures an LLM endpoint (LLM_BASE_URL). */
export const BUILTIN_LLM_AGENT = Object.freeze({
  name: 'LLM Assistant',
  description: 'A hosted LLM agent run by this service on the operator’s model: writing, answering, explaining. No tools. Built-in dev agent.',
  capabilities: ['llm', 'writing', 'question-answering'],
  baseRate: 500_000n,
  systemPrompt: 'You are a concise, careful assistant hired to complete one task. Answer the task directly.',
});

/** The registration body of a built-in agent (also the update: see ./registry.ts). */
export function registrationOf(
  agent: Pick<BuiltinAgent, 'name' | 'description' | 'capabilities' | 'baseRate'>,
  payout: string,
  runtime: Record<string, unknown>,
): RegisterAgentInput {
  return {
    name: agent.name,
    description: agent.description,
    capabilities: agent.capabilities,
    pricing: { base_rate: agent.baseRate.toString(), unit: 'per-task', currency: 'USDC' },
    payout_address: payout,
    availability: 'online',
    runtime,
  };
}
