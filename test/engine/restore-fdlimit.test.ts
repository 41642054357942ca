/**
 * Regression test for what the image fuzzer caught: a checkpoint recording an fd number at or
 * above RLIMIT_NOFILE (or 2^31-1) passed every check, and the shim then failed half-way with
 * "fcntl(F_DUPFD) failed: EINVAL" (exit 1). The plan is now refused up front (RestorePlanError,
 * exit 2) naming the fd, the file and the limit to raise. The CLI part runs under `ulimit -n 256`
 * so the boundary does not depend on this machine's limit.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { planRestore, checkFdLimit, RestorePlanError } from '../../src/engine/restore-plan.js';
import { CLI } from '../helpers/env.js';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });

function ckpt(fd: number, file: string): Checkpoint {
  return {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: 'fdinfo', source: { hostname: 'n', kernel: 'k', rootPid: 10 },
    processes: [{ pid: 10, ppid: 1, nsPid: 1, comm: 'db', cgroup: '/' }],
    files: [{ id: 1, path: file, flags: 0o100002, pos: 0n, mntId: 30, dev: { major: 254, minor: 1 }, ino: 5n, mountPoint: '/', relPath: 'f' }],
    fds: [{ pid: 10, fd, fileId: 1, cloexec: false }],
    locks: [{ kind: 'OFD', type: 'WRITE', start: 0n, end: 'EOF', pid: 10, fd, fileId: 1 }],
    skipped: [],
  };
}

describe('fd numbers the process cannot place are refused before anything is touched', () => {
  it('checkFdLimit: the highest planned fd, one free number and the spares must stay below the limit', () => {
    const plan = (fd: number) => planRestore(ckpt(fd, '/data/f'));
    expect(() => checkFdLimit(plan(997), 1000)).not.toThrow();
    expect(() => checkFdLimit(plan(998), 1000)).toThrow(RestorePlanError);
    expect(() => checkFdLimit(plan(996), 1000, 2)).not.toThrow();
    expect(() => checkFdLimit(plan(997), 1000, 2)).toThrow(/raise the container's nofile limit \(ulimit -n\) to at least 1001/);
    expect(() => checkFdLimit(plan(2 ** 31 - 1), 1_048_576)).toThrow(/fd 2147483647 \(recorded as fd 2147483647 of pid 10, "\/data\/f"\) cannot be placed: .*RLIMIT_NOFILE\) is 1048576/);
  });

  it('lockmig restore under ulimit -n 256: fd 253 is restored, fd 254 is refused with exit 2 (fuzz: EINVAL half-way, exit 1)', () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-fdlimit-'));
    dirs.push(base);
    const file = path.join(base, 'data');
    fs.writeFileSync(file, 'x');
    const run = (fd: number) => {
      const img = path.join(base, `img-${fd}`);
      writeCheckpoint(img, ckpt(fd, file));
      return spawnSync('sh', ['-c', `ulimit -n 256 && exec "${process.execPath}" "${CLI}" restore --image "${img}" --allow "${base}" --timeout 0 -- sh -c 'readlink /proc/self/fd/${fd}'`], {
        encoding: 'utf8', timeout: 60_000,
      });
    };
    const ok = run(253);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(file);
    const refused = run(254);
    expect(refused.status, refused.stderr).toBe(2);
    const line = JSON.parse(refused.stderr.trim().split('\n').pop()!);
    expect(line).toMatchObject({ error: 'RestorePlanError', exitCode: 2 });
    expect(line.message).toContain('fd 254 (recorded as fd 254 of pid 10');
    expect(line.message).toContain('(RLIMIT_NOFILE) is 256');
  });
});
