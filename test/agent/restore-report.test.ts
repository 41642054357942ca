/**
 * What the agent reports about a restore pod: the pure summary of its shims' state files (window
 * against the source's exit, on the same kernel or by wall clock), reading a state file through
 * a container's own root without following its symlinks, the container's top process, and the
 * exit watch that dates the source's exit.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { summarizeRestore, windowMs, wrappedContainers, type ContainerView } from '../../src/agent/restore-report.js';
import { awaitsLocks, readStateInContainer } from '../../src/agent/restore-watch.js';
import { topProcess } from '../../src/agent/select.js';
import { ExitWatcher, type ExitReading } from '../../src/agent/exit-watch.js';
import { STATE_FILE_VERSION, writeRestoreState, type RestoreStateFile } from '../../src/engine/restore-state.js';
import { missing } from '../helpers/env.js';

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });

const BOOT = 'b0b0b0b0-0000-4000-8000-000000000000';
function held(over: Partial<RestoreStateFile> = {}): RestoreStateFile {
  return {
    v: STATE_FILE_VERSION, state: 'held', time: '2026-12-04T10:00:05.250Z', bootID: BOOT, monotonicNs: '5250000000', pid: 1, startTicks: '100',
    image: '/lockmig/images/db', mode: 'handover', locks: { posix: 1, flock: 1, ofd: 1, lease: 0, total: 3 }, handedOver: 2, notRestored: 0, fds: [3, 5, 6], ...over,
  };
}
const pod = (extra: Partial<V1Pod['spec']> = {}): V1Pod => ({
  metadata: { name: 'db-1', namespace: 'prod', uid: '77777777-2222-3333-4444-555555555555' },
  spec: {
    containers: [
      { name: 'db', image: 'x', command: ['/lockmig/shim/current/bin/node', 'main.js', 'restore', '--image', '/lockmig/images/db', '--state-file', '/lockmig/state/db.json', '--', '/app', '--state-file', '/not/ours'], env: [{ name: 'LOCKMIG_RESTORE_FROM', value: 'prod/move' }] },
      { name: 'metrics', image: 'y', command: ['/exporter', '--state-file', '/x.json'] },
    ],
    readinessGates: [{ conditionType: 'lockmig.dev/locks-held' }],
    ...extra,
  },
});
const view = (over: Partial<ContainerView> = {}): ContainerView => ({ name: 'db', running: true, restartCount: 0, ...over });

describe('wrappedContainers', () => {
  it('takes the --state-file of wrapped containers only, and only from the shim\'s own arguments', () => {
    expect(wrappedContainers(pod())).toEqual([{ name: 'db', stateFile: '/lockmig/state/db.json' }]);
  });
});

describe('windowMs', () => {
  const exit = { time: '2026-12-04T10:00:05.000Z', bootID: BOOT, monotonicNs: '5246000000' };
  it('is 0 when every lock moved with its description, whatever the clocks say', () => {
    expect(windowMs(held({ locks: { posix: 0, flock: 1, ofd: 1, lease: 0, total: 2 }, handedOver: 2 }), undefined)).toBe(0);
  });
  it('uses CLOCK_MONOTONIC on the same kernel', () => {
    expect(windowMs(held(), exit)).toBe(4);
  });
  it('falls back to the wall clocks across kernels, and never goes negative', () => {
    expect(windowMs(held({ bootID: 'other' }), exit)).toBe(250);
    expect(windowMs(held({ bootID: 'other', time: '2026-12-04T10:00:04.000Z' }), exit)).toBe(0);
  });
  it('is unknown when the source\'s exit was not seen and something had to be re-taken', () => {
    expect(windowMs(held(), undefined)).toBeUndefined();
  });
});

describe('summarizeRestore', () => {
  const exit = { time: '2026-12-04T10:00:05.000Z', bootID: BOOT, monotonicNs: '5246000000' };
  it('is Held once every wrapped container reported, with counts, the window and the pod identity', () => {
    const s = summarizeRestore(pod(), 'node-a', [view({ state: held(), current: true })], exit);
    expect(s.done).toBe(true);
    expect(s.condition).toMatchObject({ status: 'True', reason: 'LocksHeld' });
    expect(s.report).toMatchObject({
      podName: 'db-1', podUID: '77777777-2222-3333-4444-555555555555', nodeName: 'node-a', state: 'Held', heldTime: '2026-12-04T10:00:05.250Z',
      locks: { posix: 1, flock: 1, ofd: 1, lease: 0, total: 3 }, handedOver: 2, notRestored: 0, windowMilliseconds: 4,
    });
    expect(s.condition.message).toContain('longest window 4 ms');
  });
  it('keeps waiting while a container has not written its file, naming it and any read error', () => {
    const two = pod();
    two.spec!.containers.push({ name: 'sidecar', image: 'z', command: ['/s', '--state-file', '/lockmig/state/sidecar.json'], env: [{ name: 'LOCKMIG_RESTORE_FROM', value: 'prod/move' }] });
    const s = summarizeRestore(two, 'node-a', [view({ state: held() }), view({ name: 'sidecar', stateError: 'ELOOP' })], exit);
    expect(s.done).toBe(false);
    expect(s.condition).toMatchObject({ status: 'False', reason: 'Restoring' });
    expect(s.condition.message).toMatch(/sidecar.*ELOOP/);
  });
  it('reports a failed attempt of a stopped container with its error', () => {
    const f = held({ state: 'failed', error: { name: 'LockTimeout', message: 'lock on /data/app.db is held by pid 42 (python3)', exitCode: 3 } });
    const s = summarizeRestore(pod(), 'node-a', [view({ running: false, state: f, restartCount: 2 })], exit);
    expect(s.report).toMatchObject({ state: 'Failed', reason: 'RestoreFailed' });
    expect(s.condition.message).toContain('exit 3, LockTimeout');
  });
  it('says when a container restarted after its restore (it runs without the restored locks now)', () => {
    const s = summarizeRestore(pod(), 'node-a', [view({ state: held(), current: false, restartCount: 1 })], exit);
    expect(s.done).toBe(true);
    expect(s.condition.message).toContain('restarted since');
  });
});

describe('awaitsLocks', () => {
  it('is true for a gated pod whose condition is not True yet, and never for finished or ungated pods', () => {
    expect(awaitsLocks(pod())).toBe(true);
    expect(awaitsLocks({ ...pod(), status: { conditions: [{ type: 'lockmig.dev/locks-held', status: 'True' }] } })).toBe(false);
    expect(awaitsLocks({ ...pod(), status: { phase: 'Failed' } })).toBe(false);
    expect(awaitsLocks(pod({ readinessGates: [] }))).toBe(false);
  });
});

describe('topProcess', () => {
  it('is the lowest pid whose parent is outside the container', () => {
    const parents: Record<number, number> = { 10: 5, 11: 10, 12: 11, 20: 5 };
    expect(topProcess([12, 11, 10], (p) => parents[p])).toBe(10);
    expect(topProcess([20, 12, 11, 10], (p) => parents[p])).toBe(10);
    expect(topProcess([], (p) => parents[p])).toBeUndefined();
  });
});

const skipRoot = missing({ root: true, tools: ['busybox'] }, 'state file read through a container root');

describe.skipIf(skipRoot)('readStateInContainer', () => {
  it('reads the file inside the process\'s root, and refuses a symlink planted there instead of following it to the host', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-croot-'));
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    fs.mkdirSync(path.join(root, 'bin'));
    fs.copyFileSync(spawnSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).stdout.trim(), path.join(root, 'bin/busybox'));
    fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
    writeRestoreState(path.join(root, 'lockmig/state/db.json'), held());
    fs.symlinkSync('/etc/passwd', path.join(root, 'lockmig/state/evil.json'));
    fs.mkdirSync(path.join(root, 'lockmig/link'));
    fs.symlinkSync('/etc', path.join(root, 'lockmig/link/dir'));
    const child = spawn('chroot', [root, '/bin/busybox', 'sleep', '60'], { stdio: 'ignore' });
    cleanups.push(() => child.kill('SIGKILL'));
    await new Promise((r) => setTimeout(r, 200));
    const pid = child.pid!;
    expect(fs.readlinkSync(`/proc/${pid}/root`)).toBe(root);
    expect(readStateInContainer(pid, '/lockmig/state/db.json')).toEqual({ state: held() });
    expect(readStateInContainer(pid, '/lockmig/state/absent.json')).toEqual({});
    const evil = readStateInContainer(pid, '/lockmig/state/evil.json');
    expect(evil.state).toBeUndefined();
    expect(evil.error).toMatch(/ELOOP|symbolic/i);
    expect(readStateInContainer(pid, '/lockmig/link/dir/passwd').state).toBeUndefined();
    expect(readStateInContainer(pid, '/lockmig/link/dir/passwd').error).toBeDefined();
  });
});

describe.skipIf(missing({ tools: ['sleep'] }, 'exit watch'))('ExitWatcher', () => {
  it('reports the first exit of a watch once, with wall and monotonic time; a pid already gone is reported at once as late', async () => {
    const w = new ExitWatcher();
    cleanups.push(() => w.close());
    const a = spawn('sleep', ['60'], { stdio: 'ignore' });
    const b = spawn('sleep', ['60'], { stdio: 'ignore' });
    cleanups.push(() => { a.kill('SIGKILL'); b.kill('SIGKILL'); });
    const got: ExitReading[] = [];
    const seen = new Promise<void>((resolve) => w.watch('ns/ck', [a.pid!, b.pid!], (r) => { got.push(r); resolve(); }));
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toEqual([]);
    const killedAt = process.hrtime.bigint();
    b.kill('SIGKILL');
    await seen;
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ pid: b.pid, late: false });
    expect(got[0]!.monotonicNs >= killedAt).toBe(true);
    expect(Date.parse(got[0]!.time)).not.toBeNaN();
    a.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toHaveLength(1); // once per watch
    expect(w.size).toBe(0);

    const gone = spawnSync('true').pid!;
    const late: ExitReading[] = [];
    w.watch('ns/late', [gone], (r) => late.push(r));
    expect(late).toEqual([expect.objectContaining({ pid: gone, late: true })]);
  });

  it('a cancelled watch reports nothing', async () => {
    const w = new ExitWatcher();
    cleanups.push(() => w.close());
    const a = spawn('sleep', ['60'], { stdio: 'ignore' });
    const got: ExitReading[] = [];
    w.watch('k', [a.pid!], (r) => got.push(r));
    w.cancel('k');
    a.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual([]);
  });
});
