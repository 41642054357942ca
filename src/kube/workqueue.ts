/**
 * A per-key work queue with the semantics controllers rely on (as in client-go's workqueue):
 *   - dedupe: a key added many times before it is processed is processed once;
 *   - one at a time per key: a key being processed is never handed to a second worker; if it is
 *     added meanwhile it is processed again right after `done` (nothing is lost);
 *   - delayed adds (`addAfter`): the earliest pending deadline per key wins;
 *   - rate-limited requeue (`addRateLimited`): per-key exponential backoff, reset by `forget`.
 * Time comes from a Clock so tests drive it with a FakeClock.
 */
import { backoffDelay } from './backoff.js';
import type { Clock, Timer } from './clock.js';

export interface WorkQueueOptions {
  readonly clock: Clock;
  /** first rate-limited retry delay */
  readonly baseDelayMs?: number;
  /** ceiling of the rate-limited retry delay */
  readonly maxDelayMs?: number;
  readonly random?: () => number;
}

export class WorkQueue {
  private readonly clock: Clock;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly waiting = new Map<string, { at: number; timer: Timer }>();
  private readonly failures = new Map<string, number>();
  private readonly getters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;

  constructor(opts: WorkQueueOptions) {
    this.clock = opts.clock;
    this.baseDelayMs = opts.baseDelayMs ?? 100;
    this.maxDelayMs = opts.maxDelayMs ?? 60_000;
    this.random = opts.random ?? (() => 1);
  }

  /** keys ready to be handed out */
  get length(): number {
    return this.queue.length;
  }

  /** keys waiting for a delayed add */
  get delayed(): number {
    return this.waiting.size;
  }

  isProcessing(key: string): boolean {
    return this.processing.has(key);
  }

  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return; // re-queued by done()
    this.push(key);
  }

  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.clock.now() + ms;
    const cur = this.waiting.get(key);
    if (cur && cur.at <= at) return;
    cur?.timer.cancel();
    const timer = this.clock.setTimer(() => {
      this.waiting.delete(key);
      this.add(key);
    }, ms, { unref: true });
    this.waiting.set(key, { at, timer });
  }

  /** Requeue after a failure, backing off per key; returns the delay chosen. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const d = backoffDelay(n, { baseMs: this.baseDelayMs, maxMs: this.maxDelayMs, random: this.random });
    this.addAfter(key, d);
    return d;
  }

  /** The key succeeded: reset its backoff. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Waits for the next key; undefined once the queue is shut down and drained of waiters. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) return Promise.resolve(this.take(key));
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.shuttingDown) this.push(key);
  }

  shutDown(): void {
    this.shuttingDown = true;
    for (const w of this.waiting.values()) w.timer.cancel();
    this.waiting.clear();
    for (const g of this.getters.splice(0)) g(undefined);
  }

  private push(key: string): void {
    const g = this.getters.shift();
    if (g) g(this.take(key));
    else this.queue.push(key);
  }

  private take(key: string): string {
    this.dirty.delete(key);
    this.processing.add(key);
    return key;
  }
}

export interface WorkResult {
  /** look at the key again after this long even without events */
  readonly requeueAfterMs?: number;
}

/**
 * Runs `n` workers until the queue shuts down. A handler that throws gets a rate-limited retry;
 * one that succeeds is forgotten (backoff reset) and re-queued after `requeueAfterMs` if given.
 * Resolves when every worker has stopped.
 */
export async function runWorkers(
  queue: WorkQueue, n: number, handler: (key: string) => Promise<WorkResult | void>, onError?: (key: string, err: unknown, retryInMs: number) => void,
): Promise<void> {
  const worker = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const r = await handler(key);
        queue.forget(key);
        if (r?.requeueAfterMs !== undefined) queue.addAfter(key, r.requeueAfterMs);
      } catch (err) {
        const d = queue.addRateLimited(key);
        onError?.(key, err, d);
      } finally {
        queue.done(key);
      }
    }
  };
  await Promise.all(Array.from({ length: n }, worker));
}
