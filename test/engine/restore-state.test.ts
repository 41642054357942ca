/**
 * The shim's state file (`lockmig restore --state-file`): what a restore pod's container leaves
 * behind for the agent, and what makes a container restart harmless — after a successful restore
 * the next start runs the command at once (the images may be gone by then), after a failed one
 * it tries again; a vault that no longer has the descriptions means a re-take, not a crash loop.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpProcesses } from '../../src/engine/dump.js';
import { writeCheckpoint } from '../../src/image/index.js';
import {
  parseRestoreState, readRestoreState, selfStartTicks, writeRestoreState, StateFileError, STATE_FILE_VERSION, type RestoreStateFile,
} from '../../src/engine/restore-state.js';
import { EXIT } from '../../src/cli/args.js';
import { CLI, missing } from '../helpers/env.js';
import { startHolder, contendFlock, contendFcntl, procLocks, inoOf, waitGone, PYTHON } from '../helpers/workload.js';

const skip = missing({ root: true, tools: [PYTHON, 'flock'] }, 'restore shim state file');

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-state-'));
  cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

const valid: RestoreStateFile = {
  v: STATE_FILE_VERSION, state: 'held', time: '2026-12-04T10:00:00.123Z', monotonicNs: '123456789', pid: 1, startTicks: '4242',
  image: '/lockmig/images/db', mode: 'retake', locks: { posix: 1, flock: 1, ofd: 0, lease: 0, total: 2 }, handedOver: 0, notRestored: 0, fds: [3, 4],
};

describe('state file format', () => {
  it('round-trips atomically and leaves no temp file', () => {
    const d = tmp();
    const f = path.join(d, 'sub', 'db.json');
    writeRestoreState(f, valid);
    expect(readRestoreState(f)).toEqual(valid);
    expect(fs.readdirSync(path.dirname(f))).toEqual(['db.json']);
    expect(readRestoreState(path.join(d, 'absent.json'))).toBeUndefined();
  });
  it.each([
    ['not an object', [], '(root)'],
    ['another version', { ...valid, v: 2 }, 'v'],
    ['an unknown state', { ...valid, state: 'maybe' }, 'state'],
    ['a bad time', { ...valid, time: 'yesterday' }, 'time'],
    ['a negative count', { ...valid, locks: { ...valid.locks, posix: -1 } }, 'locks.posix'],
    ['a fractional fd', { ...valid, fds: [3.5] }, 'fds'],
    ['a non-numeric monotonic time', { ...valid, monotonicNs: '1e9' }, 'monotonicNs'],
  ])('rejects %s, naming the field', (_what, raw, field) => {
    expect(() => parseRestoreState(raw, 'x.json')).toThrow(new RegExp(`^x\\.json: ${field.replace(/[.()]/g, '\\$&')} `));
  });
  it('refuses an oversized or non-regular file with StateFileError', () => {
    const d = tmp();
    fs.writeFileSync(path.join(d, 'big.json'), Buffer.alloc((1 << 20) + 1, 0x20));
    expect(() => readRestoreState(path.join(d, 'big.json'))).toThrow(StateFileError);
    expect(() => readRestoreState(d)).toThrow(/not a regular file/);
  });
  it('reads the start time of a process whose name contains spaces and parentheses', () => {
    const stat = '1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10';
    expect(selfStartTicks(stat)).toBe('987654');
    expect(selfStartTicks()).toMatch(/^\d+$/);
  });
});

function shim(args: readonly string[], cmd: readonly string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [CLI, 'restore', ...args, '--', ...cmd], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
}
const logLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

describe.skipIf(skip)('lockmig restore --state-file', () => {
  it('records what it held before exec; a restart runs the command directly even without images; a failure is recorded and retried', async () => {
    const d = tmp();
    const lockFile = path.join(d, 'data.lock');
    const ofdFile = path.join(d, 'data.ofd');
    const h = await startHolder([
      { op: 'open', name: 'f', path: lockFile }, { op: 'flock', fd: 'f', type: 'w' },
      { op: 'open', name: 'o', path: ofdFile }, { op: 'ofd', fd: 'o', type: 'w', start: 0n, len: 10n },
    ]);
    const pid = h.procs.get('root')!.pid;
    const img = path.join(d, 'img');
    writeCheckpoint(img, dumpProcesses({ pids: [pid] }));
    const state = path.join(d, 'state', 'db.json');
    const term = path.join(d, 'termination-log');
    fs.writeFileSync(term, '');

    // 1. the source still holds the locks: the attempt fails (exit 3), is recorded, and says why where the kubelet shows it
    const failed = shim(['--image', img, '--timeout', '0', '--state-file', state], ['true'], { LOCKMIG_TERMINATION_LOG: term });
    expect(failed.status).toBe(EXIT.LOCK_TIMEOUT);
    const f = readRestoreState(state)!;
    expect(f).toMatchObject({ state: 'failed', error: { exitCode: EXIT.LOCK_TIMEOUT, name: 'LockTimeout' } });
    expect(fs.readFileSync(term, 'utf8')).toMatch(/^lockmig restore failed \(exit 3, LockTimeout\): /);

    // 2. the source stops: the next attempt (a container restart) restores and records "held"
    h.kill();
    await waitGone(pid);
    const probe = `import os; print(os.getpid(), os.environ.get('LOCKMIG_FDS', ''))`;
    const ok = shim(['--image', img, '--timeout', '5', '--state-file', state], [PYTHON, '-c', probe]);
    expect(ok.status, ok.stderr).toBe(0);
    const [appPid, fds] = ok.stdout.trim().split(' ');
    const held = readRestoreState(state)!;
    expect(held).toMatchObject({ state: 'held', mode: 'retake', locks: { flock: 1, ofd: 1, posix: 0, total: 2 }, handedOver: 0, notRestored: 0, pid: Number(appPid) });
    expect(held.fds).toHaveLength(2);
    expect(fds!.split(';').map((e) => Number(e.split(':')[0])).sort()).toEqual(held.fds);
    expect(held.bootID).toBe(fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());

    // 3. another restart, with the images gone (checkpoint deleted): the command runs at once, nothing restored
    fs.rmSync(img, { recursive: true, force: true });
    const again = shim(['--image', img, '--timeout', '5', '--state-file', state], [PYTHON, '-c', probe]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout.trim().split(' ')[1] ?? '').toBe('');
    expect(logLines(again.stderr).some((l) => l.event === 'restart-after-restore' && l.level === 'warn')).toBe(true);
    expect(readRestoreState(state)).toEqual(held); // the record of the restore itself is kept
    // and nothing was left holding the files
    expect(contendFlock('w', lockFile)).toBe('acquired');
    expect(contendFcntl('ofd', 'w', ofdFile, 0n, 10n)).toBe('acquired');
  });

  it('re-takes every lock from the images when the vault socket is gone (the agent restarted) instead of failing', async () => {
    const d = tmp();
    const lockFile = path.join(d, 'data.lock');
    const h = await startHolder([{ op: 'open', name: 'f', path: lockFile }, { op: 'flock', fd: 'f', type: 'w' }]);
    const pid = h.procs.get('root')!.pid;
    const img = path.join(d, 'img');
    writeCheckpoint(img, dumpProcesses({ pids: [pid] }));
    h.kill();
    await waitGone(pid);
    const state = path.join(d, 'db.json');
    const r = shim(['--image', img, '--timeout', '1', '--handover', path.join(d, 'no-vault.sock'), '--checkpoint', 'ns/ck.db', '--state-file', state],
      [PYTHON, '-c', 'import os; print(os.environ.get("LOCKMIG_FDS", ""))']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/FLOCK:WRITE/);
    expect(logLines(r.stderr).some((l) => l.event === 'handover-unavailable')).toBe(true);
    expect(readRestoreState(state)).toMatchObject({ state: 'held', checkpoint: 'ns/ck.db', locks: { flock: 1 } });
    expect(procLocks(inoOf(lockFile))).toEqual([]); // the app exited: nothing is left behind
  });
});
