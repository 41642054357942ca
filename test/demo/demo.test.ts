/**
 * `lockmig demo` end to end, as a user runs it: it must prove every lock moved, clean up
 * after itself (no mounts, no processes, no temporary directories), and tell a non-root
 * user exactly what to do (exit 77).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
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

  it('explains what to do when not run as root (exit 77)', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, 'demo'], { encoding: 'utf8' });
    expect(r.status).toBe(77);
    expect(r.stderr).toMatch(/needs root/);
    expect(r.stderr).toMatch(/sudo/);
  });
});
