/**
 * Exponential backoff with full jitter bounds: delay(n) = min(max, base * 2^n) scaled into
 * [delay/2, delay] by `random` (passed in for tests).
 */
export interface BackoffOptions {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly random?: () => number;
}

export function backoffDelay(attempt: number, opts: BackoffOptions): number {
  const raw = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(attempt, 30));
  const r = opts.random ? opts.random() : Math.random();
  return Math.round(raw / 2 + (raw / 2) * r);
}
