import { describe, expect, it } from 'vitest';
import { staleClaim, type LockCheckpointStatus } from '../../src/api/index.js';

const T0 = Date.parse('2026-12-04T10:00:00Z');
const UID = '11111111-2222-3333-4444-555555555555';
const UID2 = '99999999-2222-3333-4444-555555555555';
const claimed = (extra: Partial<LockCheckpointStatus> = {}, uid: string | null = UID): LockCheckpointStatus => ({
  phase: 'Restoring', restoredPod: { name: 'db-0', ...(uid ? { uid } : {}), time: '2026-12-04T10:00:00Z' }, ...extra,
});

describe('staleClaim: when another pod may restore from a claimed checkpoint', () => {
  it('stands while the claimed pod lives, whatever its restore says', () => {
    expect(staleClaim(claimed(), { metadata: { uid: UID } }, T0 + 3_600_000)).toBeUndefined();
    expect(staleClaim(claimed({ restore: { podName: 'db-0', nodeName: 'n', state: 'Failed' } }), { metadata: { uid: UID } }, T0)).toBeUndefined();
  });
  it('lapses when the claimed pod is deleted, replaced under its name, or terminating before it held the locks', () => {
    expect(staleClaim(claimed(), null, T0)).toMatch(/db-0 \(uid 1111.*\) was deleted before it held the locks/);
    expect(staleClaim(claimed(), { metadata: { uid: UID2 } }, T0)).toMatch(/replaced by another pod of that name \(uid 9999/);
    expect(staleClaim(claimed(), { metadata: { uid: UID, deletionTimestamp: '2026-12-04T10:01:00Z' } }, T0)).toMatch(/terminating/);
  });
  it('never lapses once that pod held the locks (they left with it)', () => {
    const held = claimed({ restore: { podName: 'db-0', podUID: UID, nodeName: 'n', state: 'Held' } });
    expect(staleClaim(held, null, T0)).toBeUndefined();
    // a Held report of another pod of the same name does not count
    const other = claimed({ restore: { podName: 'db-0', podUID: UID2, nodeName: 'n', state: 'Held' } });
    expect(staleClaim(other, null, T0)).toBeDefined();
  });
  it('an admitted pod never created lapses only after the grace period', () => {
    const st = claimed({}, null);
    expect(staleClaim(st, null, T0 + 119_000)).toBeUndefined();
    expect(staleClaim(st, null, T0 + 121_000)).toMatch(/never created/);
    expect(staleClaim(st, null, T0 + 10_000, 5_000)).toMatch(/never created/);
    // a pod of that name exists (the new one before its UID is recorded, or the source terminating): stands
    expect(staleClaim(st, { metadata: { uid: UID2 } }, T0 + 3_600_000)).toBeUndefined();
  });
  it('nothing claimed: nothing lapses', () => {
    expect(staleClaim({ phase: 'Dumped' }, null, T0)).toBeUndefined();
    expect(staleClaim(undefined, null, T0)).toBeUndefined();
  });
});
