/**
 * `lockmig demo` end to end, as a user runs it: it must prove every lock moved, clean up
 * after itself (no mounts, no processes, no temporary directories), and tell a non-root
 * user exactly what to do (exit 77).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { CLI, missing, runCli } from '../helpers/env.js';

const skip = missing({ root: true, tools: ['unshare', 'python3', 'flock', 'sqlite3', 'setpriv'] }, 'lockmig demo');

interface Report { oldPid: number; newPid: number; volume: string; locks: { kind: string; type: string }[]; proofs: { ok: boolean; how: string }[]; timings: Record<string, number | null> }

describe.skipIf(skip)('lockmig demo', () => {
  it('moves an OFD lock, a SQLite (POSIX) lock and a flock, proves it, and cleans up', () => {
    const before = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('lockmig-demo-'));
    const r = runCli(['demo', '--json'], { timeoutMs: 90_000 });
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as Report;
    expect(report.locks.map((l) => `${l.kind}:${l.type}`).sort()).toEqual(['FLOCK:WRITE', 'OFD:WRITE', 'POSIX:WRITE']);
    expect(report.proofs.length).toBeGreaterThanOrEqual(7);
    expect(report.proofs.every((p) => p.ok)).toBe(true);
    expect(report.proofs.map((p) => p.how)).toEqual(expect.arrayContaining(['sqlite3 CLI insert', 'flock -n -x (util-linux)']));
    expect(report.newPid).not.toBe(report.oldPid);
    expect(r.stdout).toContain('What moved:');
    expect(r.stdout).toMatch(/restore until locks held\s+\d+\.\d ms/);
    // cleaned up: processes gone, tmpfs unmounted, directories removed
    for (const pid of [report.oldPid, report.newPid]) expect(fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))).toBe(false);
    expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(report.volume);
    expect(fs.existsSync(report.volume)).toBe(false);
    expect(fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('lockmig-demo-'))).toEqual(before);
  }, 120_000);

  it('--handover: OFD and flock locks are never free while contenders hammer them; the new process holds every lock', async () => {
    const before = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('lockmig-demo-'));
    const child = spawn(process.execPath, [CLI, 'demo', '--handover', '--pause', '--json'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const lines: string[] = [];
    const seen: { volume?: string; newPid?: number; kernel?: string[] } = {};
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    const killer = setTimeout(() => child.kill('SIGKILL'), 100_000);
    createInterface({ input: child.stdout }).on('line', (l) => {
      lines.push(l);
      const v = /^ {2}volume: (\S+) /.exec(l);
      if (v) seen.volume = v[1];
      const p = /^paused: the new workload \(pid (\d+)\)/.exec(l);
      if (!p) return;
      // while the demo waits: look at the kernel ourselves, not at the demo's claims
      const pid = Number(p[1]);
      seen.newPid = pid;
      try {
        const vol = seen.volume!;
        const ino = (f: string) => fs.statSync(path.join(vol, f)).ino;
        const procLocks = fs.readFileSync('/proc/locks', 'utf8').split('\n').filter((x) => !x.includes('->'));
        const has = (re: RegExp) => procLocks.some((x) => re.test(x));
        const fdinfo = fs.readdirSync(`/proc/${pid}/fdinfo`).map((fd) => fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8')).join('\n');
        seen.kernel = [
          `comm=${fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}`,
          `ofd=${has(new RegExp(`OFDLCK\\s+ADVISORY\\s+WRITE\\s+-1\\s+\\S+:${ino('journal.lock')}\\s+0\\s+EOF`))}`,
          `ofd-fdinfo=${new RegExp(`^lock:.*OFDLCK\\s+ADVISORY\\s+WRITE\\s+-1\\s+\\S+:${ino('journal.lock')}\\s`, 'm').test(fdinfo)}`,
          `flock=${has(new RegExp(`FLOCK\\s+ADVISORY\\s+WRITE\\s+\\d+\\s+\\S+:${ino('leader.lock')}\\s+0\\s+EOF`))}`,
          `flock-fdinfo=${new RegExp(`^lock:.*FLOCK\\s+ADVISORY\\s+WRITE\\s+\\d+\\s+\\S+:${ino('leader.lock')}\\s`, 'm').test(fdinfo)}`,
          `posix=${has(new RegExp(`POSIX\\s+ADVISORY\\s+WRITE\\s+${pid}\\s+\\S+:${ino('app.db')}\\s`))}`,
          `flock-contender=${spawnSync('flock', ['-n', '-E', '75', '-x', path.join(vol, 'leader.lock'), 'true']).status}`,
        ];
      } catch (err) {
        seen.kernel = [`error: ${(err as Error).message}`];
      }
      child.stdin.end('\n');
    });
    const code = await exited;
    clearTimeout(killer);
    expect(code, `${stderr}\n${lines.join('\n')}`).toBe(0);
    expect(seen.kernel).toEqual(['comm=python3', 'ofd=true', 'ofd-fdinfo=true', 'flock=true', 'flock-fdinfo=true', 'posix=true', 'flock-contender=75']);
    const report = JSON.parse(lines[lines.length - 1]!) as {
      oldPid: number; newPid: number; volume: string; moved: { kind: string }[]; retaken: { kind: string; queued: boolean; windowUs: number }[];
      contenders: { lock: string; attempts: number; wins: number; errors: number; attemptsInWindow: number | null }[]; proofs: { ok: boolean }[];
    };
    expect(report.newPid).toBe(seen.newPid);
    expect(report.newPid).not.toBe(report.oldPid);
    expect(report.moved.map((l) => l.kind).sort()).toEqual(['FLOCK', 'OFD']);
    expect(report.retaken.length).toBeGreaterThan(0);
    expect(report.retaken.every((l) => l.kind === 'POSIX' && Number.isFinite(l.windowUs))).toBe(true);
    // the contenders ran throughout and never won
    expect(report.contenders.map((c) => c.lock).sort()).toEqual(['journal.lock OFD', 'leader.lock FLOCK']);
    for (const c of report.contenders) {
      expect(c.wins, c.lock).toBe(0);
      expect(c.errors, c.lock).toBe(0);
      expect(c.attempts, c.lock).toBeGreaterThan(10);
    }
    expect(report.contenders.find((c) => c.lock.startsWith('journal'))!.attemptsInWindow).toBeGreaterThan(0);
    expect(report.proofs.every((p) => p.ok)).toBe(true);
    expect(lines.join('\n')).toMatch(/Moved with no window/);
    expect(lines.join('\n')).toMatch(/stop the old workload \(SIG(TERM|KILL)\)\s+\d+\.\d ms/);
    // cleaned up: processes gone, tmpfs unmounted, directories, images and socket removed
    for (const pid of [report.oldPid, report.newPid]) expect(fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))).toBe(false);
    expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(report.volume);
    expect(fs.existsSync(report.volume)).toBe(false);
    expect(fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('lockmig-demo-'))).toEqual(before);
  }, 120_000);

  it('explains what to do when not run as root (exit 77)', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, 'demo'], { encoding: 'utf8' });
    expect(r.status).toBe(77);
    expect(r.stderr).toMatch(/needs root/);
    expect(r.stderr).toMatch(/sudo/);
  });
});
