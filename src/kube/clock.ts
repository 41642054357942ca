/**
 * Time, passed in (STYLE.md #8): every timer in src/kube and src/controller goes through a Clock
 * so work queues, leader election and backoff are tested with a fake clock, without sleeping.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** milliseconds since the epoch */
  now(): number;
  /** run `fn` after `ms`; the returned timer never keeps the process alive on its own when `unref` */
  setTimer(fn: () => void, ms: number, opts?: { unref?: boolean }): Timer;
  /** resolves after `ms` (or at once when `signal` aborts) */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * Node.js timers hold at most 2^31-1 ms; a longer delay fires after 1 ms (TimeoutOverflowWarning).
 * realClock therefore waits in steps of at most that long.
 */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export const realClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms, opts) {
    let t: NodeJS.Timeout;
    const arm = (left: number) => {
      const step = Math.min(MAX_TIMEOUT_MS, left);
      t = setTimeout(() => (left > step ? arm(left - step) : fn()), step);
      if (opts?.unref) t.unref();
    };
    arm(Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  },
  sleep(ms, signal) {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const timer = realClock.setTimer(done, ms);
      function done() {
        timer.cancel();
        signal?.removeEventListener('abort', done);
        resolve();
      }
      signal?.addEventListener('abort', done, { once: true });
    });
  },
};

/**
 * A manual clock for tests: time moves only through `advance`, which fires due timers in order
 * (and lets promise continuations run between them).
 */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = Date.parse('2026-01-01T00:00:00Z')) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return { cancel: () => this.timers.delete(id) };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const onAbort = () => { timer.cancel(); resolve(); };
      const timer = this.setTimer(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** number of pending timers */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing every timer that falls due, earliest first. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at || (e[1].at === next[1].at && e[0] < next[0]))) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
    await flush();
  }
}

/** Lets pending promise continuations run (several turns, for chains of awaits). */
export async function flush(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}
