/**
 * What a status write must respect to be accepted, and to be written once: the limits of the
 * CRD's status schema (crds/lockmig.dev_lockcheckpoints.yaml) and JSON merge patch semantics.
 * A status the API server refuses is retried forever and the object never reaches its phase; a
 * patch that cannot produce the desired object is written again on every pass. Pure functions,
 * used by reconcile.ts.
 */
import type { Condition } from '../api/lockcheckpoint.js';

/** The CRD's maxItems of status.conditions. */
export const MAX_CONDITIONS = 16;

/** The CRD's maxLength of status.message and conditions[].message. */
export const MAX_MESSAGE_LENGTH = 32768;

/** Cut a message to at most MAX_MESSAGE_LENGTH UTF-8 bytes (so at most that many characters too). */
export function fitMessage(m: string): string {
  if (m.length <= MAX_MESSAGE_LENGTH / 4 || Buffer.byteLength(m, 'utf8') <= MAX_MESSAGE_LENGTH) return m;
  const tail = ' … (truncated)';
  let cut = Buffer.from(m, 'utf8').subarray(0, MAX_MESSAGE_LENGTH - Buffer.byteLength(tail)).toString('utf8');
  // a cut inside a multi-byte character decodes to U+FFFD (3 bytes): drop it
  while (Buffer.byteLength(cut, 'utf8') + Buffer.byteLength(tail) > MAX_MESSAGE_LENGTH || cut.endsWith('\uFFFD')) cut = cut.slice(0, -1);
  return `${cut}${tail}`;
}

function timeMs(t: string): number {
  const v = Date.parse(t);
  return Number.isNaN(v) ? 0 : v;
}

/**
 * Keep at most MAX_CONDITIONS conditions, all of `ours` among them: others' conditions make room,
 * the oldest (by lastTransitionTime) first. Returns the conditions in their original order and
 * the types dropped, sorted.
 */
export function capConditions(conds: readonly Condition[], ours: readonly string[]): { conditions: Condition[]; dropped: string[] } {
  if (conds.length <= MAX_CONDITIONS) return { conditions: [...conds], dropped: [] };
  const own = new Set(ours);
  const foreign = conds.filter((c) => !own.has(c.type)).sort((a, b) => timeMs(b.lastTransitionTime) - timeMs(a.lastTransitionTime));
  const keep = new Set(foreign.slice(0, Math.max(0, MAX_CONDITIONS - own.size)).map((c) => c.type));
  return {
    conditions: conds.filter((c) => own.has(c.type) || keep.has(c.type)),
    dropped: foreign.filter((c) => !keep.has(c.type)).map((c) => c.type).sort(),
  };
}

/**
 * The merge-patch value that turns `a` into `b`. A JSON merge patch merges objects key by key, so
 * keys of `a` missing from `b` must be sent as null, or a stray key (say status.locks.extra, stored
 * by a server without the CRD's pruning) would survive every write and the next pass would write
 * again, forever.
 */
export function replacing(a: unknown, b: unknown): unknown {
  if (!isObj(a) || !isObj(b)) return b;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(b)) if (v !== undefined) out[k] = replacing(a[k], v);
  for (const k of Object.keys(a)) if (!(k in out)) out[k] = null;
  return out;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
