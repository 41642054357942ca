/**
 * Regression tests for what the LockCheckpoint fuzzer (test/fuzz/lockcheckpoint.test.ts) caught in
 * the controller's pure reconcile, one hand-written case each.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, MAX_REQUEUE_MS, reconcile, type PodView, type RawCheckpoint } from '../../src/controller/reconcile.js';
import { MAX_CONDITIONS, MAX_MESSAGE_LENGTH } from '../../src/controller/status-write.js';
import { FINALIZER_IMAGES, LABEL_NODE, validateStatus, type LockCheckpointStatus } from '../../src/api/lockcheckpoint.js';

const UID = '11111111-2222-3333-4444-555555555555';
const T0 = Date.parse('2026-01-01T00:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000);
const iso = (s: number) => at(s).toISOString().replace('.000Z', 'Z');
const cfg = DEFAULT_CONFIG;
const MAX_TIMER_MS = 2 ** 31 - 1;

const pod: PodView = { metadata: { name: 'db-0', uid: UID }, spec: { nodeName: 'node-a', containers: [{ name: 'db' }] }, status: { phase: 'Running' } };

function ck(spec: Record<string, unknown>, status?: LockCheckpointStatus): RawCheckpoint {
  return {
    metadata: {
      name: 'c1', namespace: 'ns', uid: 'ck-uid', generation: 1, resourceVersion: '7', creationTimestamp: iso(0),
      labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES],
    },
    spec, ...(status ? { status } : {}),
  };
}

/** RFC 7386 JSON merge patch, as the API server applies it. */
function mergePatch(target: unknown, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...target as Record<string, unknown> } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (typeof v === 'object' && !Array.isArray(v)) out[k] = mergePatch(out[k], v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

function dumpedAt(s: number, agent: Record<string, unknown> = {}): LockCheckpointStatus {
  const first = reconcile(ck({ sourcePodName: 'db-0' }), pod, at(0), cfg);
  return {
    ...first.status,
    agent: { nodeName: 'node-a', podUID: UID, state: 'Dumped', completionTime: iso(s), locks: { posix: 1, flock: 0, ofd: 0, lease: 0, total: 1 }, files: 1, ...agent },
  } as LockCheckpointStatus;
}

describe('reconcile: findings of the LockCheckpoint fuzzer', () => {
  it('a 30-day ttlSecondsAfterFinished requeues within an hour, not after 2.6e9 ms (fuzz: timer overflow, reconciled every 1 ms)', () => {
    const spec = { sourcePodName: 'db-0', ttlSecondsAfterFinished: 30 * 86_400 };
    const done = reconcile(ck(spec, dumpedAt(2)), pod, at(3), cfg);
    expect(done.status.phase).toBe('Dumped');
    expect(done.requeueAfterMs).toBe(MAX_REQUEUE_MS);
    expect(done.requeueAfterMs!).toBeLessThanOrEqual(MAX_TIMER_MS);
    // an early pass finds the deadline still ahead; at the deadline the object goes
    const later = reconcile(ck(spec, done.status), pod, at(3 + 3600), cfg);
    expect(later.delete).toBeUndefined();
    expect(later.statusPatch).toBeUndefined();
    expect(reconcile(ck(spec, done.status), pod, at(2 + 30 * 86_400), cfg).delete).toBe(true);
  });

  it('an agent heartbeat stamped in year 9999 requeues within an hour (fuzz: requeueAfterMs 2.5e14)', () => {
    const st = { ...dumpedAt(2, { state: 'Dumping', heartbeatTime: '9999-12-31T23:59:59Z' }) };
    const r = reconcile(ck({ sourcePodName: 'db-0' }, st), pod, at(5), cfg);
    expect(r.status.phase).toBe('Dumping');
    expect(r.requeueAfterMs).toBe(MAX_REQUEUE_MS);
  });

  it('an agent failure message of 32768 characters still fits the CRD after our prefix (fuzz: API server refused the status write)', () => {
    const st = dumpedAt(2, { state: 'Failed', reason: 'DumpFailed', message: 'é'.repeat(32768) });
    const r = reconcile(ck({ sourcePodName: 'db-0' }, st), pod, at(5), cfg);
    expect(r.status.phase).toBe('Failed');
    const ready = r.status.conditions!.find((c) => c.type === 'Ready')!;
    expect(ready.reason).toBe('AgentFailed');
    for (const m of [r.status.message!, ready.message]) {
      expect(Buffer.byteLength(m, 'utf8')).toBeLessThanOrEqual(MAX_MESSAGE_LENGTH);
      expect(m.startsWith('agent on node node-a failed (DumpFailed): éé')).toBe(true);
      expect(m.endsWith('é … (truncated)')).toBe(true);
    }
    // the next pass changes nothing: no write loop on the cut message
    expect(reconcile(ck({ sourcePodName: 'db-0' }, r.status), pod, at(6), cfg).statusPatch).toBeUndefined();
  });

  it('a spec with thousands of errors (no schema on the server) still ends Failed/InvalidSpec with a message that fits', () => {
    const spec: Record<string, unknown> = { sourcePodName: 'db-0' };
    for (let i = 0; i < 5000; i++) spec[`unknownField${i}`] = i;
    const r = reconcile(ck(spec), pod, at(1), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(r.status.conditions!.find((c) => c.type === 'Ready')!.reason).toBe('InvalidSpec');
    expect(r.status.message!.startsWith('invalid spec: spec.unknownField0: unknown field;')).toBe(true);
    expect(r.status.message!.length).toBeLessThanOrEqual(MAX_MESSAGE_LENGTH);
  });

  it('lock counts near 2^53 without a total give a total that still validates (fuzz: status.locks.total not a safe integer)', () => {
    const big = Number.MAX_SAFE_INTEGER;
    const st = dumpedAt(2, { locks: { posix: big, flock: big, ofd: 1, lease: 0 } });
    const r = reconcile(ck({ sourcePodName: 'db-0' }, st), pod, at(3), cfg);
    expect(r.status.phase).toBe('Dumped');
    expect(r.status.locks).toEqual({ posix: big, flock: big, ofd: 1, lease: 0, total: big });
    expect(validateStatus(r.status)).toEqual([]);
  });

  it('16 foreign conditions (the CRD maximum) make room for Ready and Dispatched, oldest dropped, with a Warning (fuzz: 18 conditions refused)', () => {
    const foreign = Array.from({ length: 16 }, (_, i) => ({
      type: `example.com/C${String(i).padStart(2, '0')}`, status: 'True' as const, lastTransitionTime: iso(100 + i), reason: 'X', message: 'm',
    }));
    const r = reconcile(ck({ sourcePodName: 'db-0' }, { conditions: foreign }), pod, at(200), cfg);
    const types = r.status.conditions!.map((c) => c.type);
    expect(types).toHaveLength(MAX_CONDITIONS);
    expect(types).toEqual(expect.arrayContaining(['Ready', 'Dispatched', 'example.com/C15', 'example.com/C02']));
    expect(types).not.toContain('example.com/C00');
    expect(types).not.toContain('example.com/C01');
    expect(r.events).toContainEqual(expect.objectContaining({ type: 'Warning', reason: 'ConditionsDropped', message: expect.stringContaining('example.com/C00, example.com/C01') }));
    expect(reconcile(ck({ sourcePodName: 'db-0' }, r.status as LockCheckpointStatus), pod, at(201), cfg).events.some((e) => e.reason === 'ConditionsDropped')).toBe(false);
  });

  it('a node name of 100,000 characters (a server without the CRD schema) still gives a Dispatched message that fits (fuzz: conditions[0].message too long)', () => {
    const st = { ...dumpedAt(2, { state: 'Dumping', heartbeatTime: iso(4) }) } as LockCheckpointStatus;
    const node = 'n'.repeat(100_000);
    const r = reconcile(ck({ sourcePodName: 'db-0' }, { ...st, nodeName: node, agent: { ...st.agent!, nodeName: node } }), pod, at(5), cfg);
    for (const c of r.status.conditions!) expect(Buffer.byteLength(c.message, 'utf8')).toBeLessThanOrEqual(MAX_MESSAGE_LENGTH);
    expect(Buffer.byteLength(r.status.message!, 'utf8')).toBeLessThanOrEqual(MAX_MESSAGE_LENGTH);
  });

  it('stray keys in status.locks are removed by the patch, so the next pass writes nothing (fuzz: write loop)', () => {
    const st = { ...dumpedAt(2), locks: { nodeLocal: {}, posix: 5 } } as unknown as LockCheckpointStatus;
    const r = reconcile(ck({ sourcePodName: 'db-0' }, st), pod, at(3), cfg);
    expect(r.statusPatch?.locks).toEqual({ posix: 1, flock: 0, ofd: 0, lease: 0, total: 1, nodeLocal: null });
    // the API server applies the merge patch: the stray key goes, and nothing is left to write
    const merged = mergePatch(st, r.statusPatch!) as LockCheckpointStatus;
    expect(merged.locks).toEqual({ posix: 1, flock: 0, ofd: 0, lease: 0, total: 1 });
    expect(reconcile(ck({ sourcePodName: 'db-0' }, merged), pod, at(4), cfg).statusPatch).toBeUndefined();
  });
});
