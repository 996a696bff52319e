import { getAddress } from 'viem';
import { findTransfer } from '../escrow/outbox.js';
import { AppError } from '../errors.js';
import { TaskModule, type TaskDeps } from './access.js';
import type { ProgressReport, TaskLifecycle } from './lifecycle.js';
import type { ResultContentT } from './schemas.js';
import { publicStatus, type TaskStatus } from './state-machine.js';

/** The hired agent's side of a task (its owner or payout wallet): progress, delivery, payment claim. */
export class TaskProvider extends TaskModule {
  constructor(
    deps: TaskDeps,
    private readonly lifecycle: TaskLifecycle,
  ) {
    super(deps);
  }

  async agentProgress(wallet: string, id: string, report: ProgressReport): Promise<{ task_id: string; status: string; progress_percent: number }> {
    await this.forAgent(wallet, id);
    const row = await this.lifecycle.reportProgress(id, report);
    return { task_id: row.id, status: publicStatus(row.status as TaskStatus), progress_percent: row.progressPercent };
  }

  /** An agent delivers its result through the API (async webhook agents). */
  async deliver(wallet: string, id: string, result: ResultContentT): Promise<{ task_id: string; status: 'completed'; result_hash: string; completed_at: string }> {
    await this.forAgent(wallet, id);
    const row = await this.lifecycle.markCompleted(id, result, `agent:${wallet.toLowerCase()}`);
    return { task_id: row.id, status: 'completed', result_hash: row.resultHash!, completed_at: row.finishedAt!.toISOString() };
  }

  /** The provider claims payment for delivered work: the hash must be the delivered result's. */
  async claim(wallet: string, id: string, hash: string) {
    const task = await this.forAgent(wallet, id);
    if (task.status !== 'completed' || !task.resultHash) {
      throw new AppError('not_ready', `Task ${id} is ${publicStatus(task.status as TaskStatus)}; payment is claimed for completed work`);
    }
    if (hash.toLowerCase().replace(/^0x/, '') !== task.resultHash) {
      throw new AppError('result_hash_mismatch', 'result_hash is not the SHA-256 of the delivered result', { param: 'result_hash' });
    }
    const release = await findTransfer(this.db, id, 'release');
    if (!release) throw new AppError('not_ready', `The escrow of task ${id} is ${task.escrowStatus}; nothing is released yet`);
    return {
      task_id: id,
      claim_status: 'approved' as const,
      payment: { amount: release.amount.toString(), tx_hash: release.txHash, recipient: getAddress(release.toAddress), status: release.status },
      claimed_at: this.clock.now().toISOString(),
    };
  }

}
