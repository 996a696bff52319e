import { z } from 'zod';
import type { ResultContentT } from '../tasks/schemas.js';

/**
 * The contract between the dispatcher and the agents it runs. A runtime is chosen by the
 * `kind` of the agent's `runtime` object (validated by that kind's zod schema at registration).
 */

/** What the hired agent is told: everything it needs, nothing of the client's other context. */
export interface TaskBrief {
  taskId: string;
  agentId: string;
  description: string;
  requirements: unknown;
  budget: { amount: string; currency: 'USDC' };
  /** When the work times out (the task fails and the escrow is refunded). */
  deadline: Date;
  /** 1 for the first run, 2+ for retries after a transient failure. */
  attempt: number;
  /** URLs a remote agent may call back (authenticated as the agent's wallet). */
  callbacks: { progress: string; deliver: string };
  /**
   * A batch item's predecessors (its depends_on), in the order it named them: each one's result, or
   * why it has none (policy `continue` runs an item after a failed predecessor). The only context
   * an item gets from the rest of its batch.
   */
  predecessors?: PredecessorResult[];
  /** What the client allowed this task's hosted agent (a batch item's toolsets and max_iterations); it can only narrow the owner's settings. */
  limits?: RunLimits;
}

export interface RunLimits {
  toolsets?: string[];
  max_iterations?: number;
}

export interface PredecessorResult {
  task_id: string;
  /** Its position in the batch request. */
  index: number;
  status: string;
  result: ResultContentT | null;
  /** Why it delivered nothing (failed, cancelled…); null when it delivered. */
  failure: string | null;
}

export interface ProgressUpdate {
  progress_percent?: number;
  intermediate_result?: unknown;
  estimated_completion?: string | null;
}

export interface RunContext {
  /** Aborted on timeout, cancellation or shutdown: stop work, release resources. */
  signal: AbortSignal;
  /** Records progress for the status endpoint (safe to call often). */
  report(update: ProgressUpdate): Promise<void>;
  /**
   * Tools the service itself offers this run (delegate_task), each under the toolset that enables
   * it; a hosted agent gets those its owner enabled (and the task allows). Absent: none (a child
   * task is never offered delegate_task).
   */
  tools?: ServiceTool[];
}

/** A tool run by the service for a hosted agent (OpenAI function-calling definition). */
export interface ServiceTool {
  /** The toolset that enables it (hosted-llm-config.ts `TOOLSETS`). */
  toolset: string;
  definition: { name: string; description: string; parameters: unknown };
  /** Its answer is JSON-serialised into the tool message; a throw becomes `{error: message}`. */
  execute(args: unknown, signal: AbortSignal): Promise<unknown>;
}

/** What the service offers the run of one task (the dispatcher asks once per run). */
export interface ServiceTools {
  forRun(task: { id: string; delegationDepth: number }): ServiceTool[];
}

export type RunOutcome =
  /** The agent delivered the result now. */
  | { kind: 'completed'; result: ResultContentT }
  /** A remote agent accepted the task and will deliver through POST /v1/tasks/{id}/deliver. */
  | { kind: 'accepted' }
  /** It did not work; `retryable` = a transient failure the dispatcher may retry with backoff. */
  | { kind: 'failed'; reason: string; retryable: boolean };

export interface AgentRuntime<C = unknown> {
  readonly kind: string;
  /** The zod schema of this kind's runtime object (registration validates against it). */
  readonly configSchema: z.ZodType<C>;
  run(brief: TaskBrief, config: C, ctx: RunContext): Promise<RunOutcome>;
  /** Tells a remote agent that the task was cancelled or timed out (best effort). */
  notifyCancelled?(brief: TaskBrief, config: C, reason: string): Promise<void>;
}
