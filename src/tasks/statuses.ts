/** The task statuses (no imports: shared by the state machine and the wire schemas). */
export const taskStatuses = [
  'created',
  'funded',
  'in_progress',
  'completed',
  'failed',
  'cancelled',
  'disputed',
  'expired',
] as const;
export type TaskStatus = (typeof taskStatuses)[number];

/**
 * The status clients see. A funded task whose work has not started yet reads `in_progress`
 * (with `stage: "queued"`): clients poll while a task is in_progress, and a paid-for task is
 * on its way from the moment its escrow is held.
 */
export type PublicStatus = Exclude<TaskStatus, 'funded'>;
export const publicStatuses = taskStatuses.filter((s): s is PublicStatus => s !== 'funded');
export function publicStatus(status: TaskStatus): PublicStatus {
  return status === 'funded' ? 'in_progress' : status;
}

