/**
 * `lockmig handover` end to end with the real restore shim: a python3 workload in its own
 * mount+pid namespace holds OFD, flock and POSIX locks; the target (`sleep`, started through
 * `lockmig restore --handover` inside a real cgroup2 cgroup) must end up holding every lock at
 * the recorded fd number while independent contenders hammer them throughout.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, missing } from '../helpers/env.js';
import { parseProcLocks } from '../../src/handover/posix.js';
import {
  TestCgroup, startHolder, tmpDir, fcntlContender, flockContender, type Contender,
} from './helpers.js';

const skip = missing({ root: true, tools: ['unshare', 'flock', 'python3', 'sleep'] }, 'lockmig handover CLI');

function runCliAsync(args: readonly string[], timeoutMs = 60_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (status) => { clearTimeout(t); resolve({ status, stdout, stderr }); });
  });
}

describe.skipIf(skip)('lockmig handover (CLI, real shim)', () => {
  const cleanup: (() => void | Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c();
  });

  it('moves OFD and flock locks with no window and re-takes POSIX through a queued wait; the target holds all at the recorded fds', async () => {
    const dir = tmpDir('hocli');
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const cg = new TestCgroup('cli-target');
    cleanup.push(() => cg.remove());
    const f = { ofd: path.join(dir, 'ofd.db'), fl: path.join(dir, 'flock.db'), px: path.join(dir, 'posix.db') };
    for (const p of Object.values(f)) fs.writeFileSync(p, 'x'.repeat(1024));
    const h = await startHolder([
      { path: f.ofd, fd: 7, kind: 'OFD', type: 'WRITE', start: 0, len: 100 },
      { path: f.fl, fd: 9, kind: 'FLOCK', type: 'WRITE' },
      { path: f.px, fd: 12, kind: 'POSIX', type: 'WRITE', start: 10, len: 10 },
    ]);
    cleanup.push(() => h.kill());
    const contenders: Contender[] = [];
    cleanup.push(() => contenders.forEach((c) => c.kill()));
    const ofdC = await fcntlContender('OFD', [{ path: f.ofd, start: 0, len: 100 }], path.join(dir, 'c-ofd'));
    contenders.push(ofdC);
    const flC = await flockContender(f.fl, path.join(dir, 'c-flock'));
    contenders.push(flC);
    const pxC = await fcntlContender('POSIX', [{ path: f.px, start: 10, len: 10 }], path.join(dir, 'c-posix'));
    contenders.push(pxC);

    const r = await runCliAsync([
      'handover', '--pid', String(h.pid), '--image', path.join(dir, 'img'), '--socket', path.join(dir, 'vault.sock'),
      '--target-cgroup', cg.fsPath, '--timeout', '30', '--grace', '2', '--allow', dir, '--json', '--', 'sleep', '600',
    ]);
    expect(r.status, r.stderr.slice(-3000)).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      targetPid: number; sourcePids: number[]; moved: { kind: string; fd: number }[];
      retaken: { kind: string; fd: number; queued: boolean; grantAfterStopUs: number }[]; stopToHoldMs: number;
      verified: { ok: boolean; problems: string[] };
    };
    const target = out.targetPid;
    cleanup.push(() => { try { process.kill(target, 'SIGKILL'); } catch { /* gone */ } });
    const got = { ofd: await ofdC.stop(), flock: await flC.stop(), posix: await pxC.stop() };
    process.stdout.write(`\n[lockmig handover] stop→hold ${out.stopToHoldMs.toFixed(2)} ms; POSIX grant ≤ ${(out.retaken[0]!.grantAfterStopUs / 1000).toFixed(3)} ms after the stop signal; `
      + `contender wins: OFD ${got.ofd.wins}/${got.ofd.attempts}, flock ${got.flock.wins}/${got.flock.attempts}, POSIX ${got.posix.wins}/${got.posix.attempts}\n`);

    expect(out.moved.map((m) => `${m.kind}@${m.fd}`).sort()).toEqual(['FLOCK@9', 'OFD@7']);
    expect(out.retaken).toEqual([expect.objectContaining({ kind: 'POSIX', fd: 12, queued: true })]);
    expect(out.verified).toEqual({ ok: true, problems: [] });
    expect(got.ofd.wins).toBe(0);
    expect(got.flock.wins).toBe(0);
    expect(got.ofd.attempts).toBeGreaterThan(0);

    // the source is gone, the target is the shim's exec'd command, in the target cgroup
    expect(fs.existsSync(`/proc/${h.pid}`)).toBe(false);
    expect(fs.readFileSync(`/proc/${target}/comm`, 'utf8').trim()).toBe('sleep');
    expect(cg.pids()).toContain(target);
    // kernel view: every lock on the recorded fd of the target
    const ino = (p: string) => fs.statSync(p, { bigint: true }).ino;
    const fdinfo = (fd: number) => fs.readFileSync(`/proc/${target}/fdinfo/${fd}`, 'utf8');
    expect(fdinfo(7)).toMatch(new RegExp(`lock:\\s+\\d+: OFDLCK\\s+ADVISORY\\s+WRITE -1 \\S+:${ino(f.ofd)} 0 99`));
    expect(fdinfo(9)).toMatch(new RegExp(`lock:\\s+\\d+: FLOCK\\s+ADVISORY\\s+WRITE \\d+ \\S+:${ino(f.fl)} 0 EOF`));
    expect(fdinfo(12)).toMatch(new RegExp(`lock:\\s+\\d+: POSIX\\s+ADVISORY\\s+WRITE ${target} \\S+:${ino(f.px)} 10 19`));
    const locks = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8'));
    expect(locks.filter((l) => !l.waiter && l.ino === ino(f.px))).toEqual([expect.objectContaining({ kind: 'POSIX', pid: target })]);
    // exactly one holder of each description-owned lock: the target (the vault closed its copy and exited)
    expect(locks.filter((l) => !l.waiter && l.ino === ino(f.ofd))).toHaveLength(1);
    expect(fs.existsSync(path.join(dir, 'vault.sock'))).toBe(false);
    // the program was told about its inherited fds
    expect(fs.readFileSync(`/proc/${target}/environ`, 'utf8')).toMatch(/LOCKMIG_FDS=/);
    // once the target exits, the locks are free again (nobody else held them)
    process.kill(target, 'SIGKILL');
    await new Promise((res) => setTimeout(res, 100));
    expect(parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => l.ino === ino(f.ofd) || l.ino === ino(f.fl))).toEqual([]);
  });

  it('refuses bad usage with exit code 2 and a clear message', async () => {
    const r = await runCliAsync(['handover', '--pid', 'abc', '--image', '/tmp/x', '--socket', '/tmp/s', '--', 'true']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--pid/);
    const r2 = await runCliAsync(['handover', '--pid', '1', '--image', '/tmp/x', '--socket', '/tmp/s']);
    expect(r2.status).toBe(2);
    expect(r2.stderr).toMatch(/no target command/);
  });
});
