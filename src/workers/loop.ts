/**
 * The one background loop of the workers (dispatcher, settlement, callbacks, maintenance): runs
 * `run` every `intervalMs`, never two at once, reports errors instead of throwing; `stop` waits
 * for the run in progress. The timer does not keep the process alive.
 */
export class Loop {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly run: () => Promise<unknown>,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(intervalMs: number): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
    this.tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  private tick(): void {
    if (this.running) return;
    this.running = this.run()
      .then(() => undefined)
      .catch(this.onError)
      .finally(() => {
        this.running = null;
      });
  }
}
