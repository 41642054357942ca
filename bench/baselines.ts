/**
 * Baselines the benchmarks measure in the same run as lockmig itself:
 *
 *  - the C floor (bench/floor.c, compiled here with gcc -O2 at bench time): reads every fdinfo
 *    file and fd link of a process, nothing else — what any dump must at least do;
 *  - CRIU 4.x `criu dump --file-locks --leave-running` of the whole process (its memory too),
 *    when a criu 4.x is on PATH (../shared/criu has a build for this kind of machine);
 *  - `node -e 0`: one bare Node.js start.
 *
 * A missing tool is reported loudly by the caller, never silently turned into a pass.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FLOOR_C = fileURLToPath(new URL('../../bench/floor.c', import.meta.url));

export interface FloorRun {
  /** whole process, spawn → exit */
  readonly wallMs: number;
  /** the reading loop alone, as the program timed it */
  readonly readMs: number;
  readonly fds: number;
}

/** Compiles bench/floor.c into a temporary directory; returns the binary, or a reason it could not. */
export function buildFloor(): { bin: string } | { error: string } {
  const src = fs.existsSync(FLOOR_C) ? FLOOR_C : path.resolve('bench/floor.c');
  if (!fs.existsSync(src)) return { error: `bench/floor.c not found (looked at ${FLOOR_C})` };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-floor-'));
  const bin = path.join(dir, 'floor');
  const r = spawnSync('gcc', ['-O2', '-o', bin, src], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { error: `gcc failed: ${r.error?.message ?? r.stderr.trim()}` };
  return { bin };
}

export function runFloor(bin: string, pid: number): FloorRun {
  const t = performance.now();
  const r = spawnSync(bin, [String(pid)], { encoding: 'utf8' });
  const wallMs = performance.now() - t;
  if (r.status !== 0) throw new Error(`C floor failed: ${r.stderr}`);
  const [fds, , ms] = r.stdout.trim().split(/\s+/).map(Number);
  return { wallMs, readMs: ms!, fds: fds! };
}

/** A criu 4.x binary on PATH, or why not. */
export function findCriu4(): { bin: string; version: string } | { error: string } {
  const r = spawnSync('criu', ['--version'], { encoding: 'utf8' });
  if (r.error) return { error: 'criu is not on PATH (install CRIU 4.x: ../shared/criu/README.md)' };
  const m = /Version:\s*(\d+)\.(\d+)/.exec(r.stdout);
  if (!m) return { error: `cannot read criu's version from ${JSON.stringify(r.stdout.trim())}` };
  if (Number(m[1]) < 4) return { error: `criu ${m[1]}.${m[2]} is on PATH; it cannot dump on this kernel (CRIU 4.1+ can): install CRIU 4.x` };
  return { bin: 'criu', version: `${m[1]}.${m[2]}` };
}

/** criu dump of the whole process, left running; returns spawn → exit wall time. */
export function runCriuDump(bin: string, pid: number, dir: string): number {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const t = performance.now();
  const r = spawnSync(bin, ['dump', '-t', String(pid), '-D', dir, '--file-locks', '--leave-running', '--shell-job', '--ext-unix-sk', '-o', 'dump.log'], { encoding: 'utf8' });
  const ms = performance.now() - t;
  if (r.status !== 0) {
    let log = '';
    try { log = fs.readFileSync(path.join(dir, 'dump.log'), 'utf8').split('\n').filter((l) => /Error|error/.test(l)).slice(-5).join('\n'); } catch { /* none */ }
    throw new Error(`criu dump failed (${r.status}): ${r.stderr.trim()} ${log}`);
  }
  return ms;
}

/** `node -e 0`, spawn → exit. */
export function runNodeStart(node = process.execPath): number {
  const t = performance.now();
  const r = spawnSync(node, ['-e', '0']);
  const ms = performance.now() - t;
  if (r.status !== 0) throw new Error('node -e 0 failed');
  return ms;
}
