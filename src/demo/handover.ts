/**
 * `lockmig demo --handover`: the same-node handover, shown on real processes with
 * independent contenders hammering the locks the whole time.
 *
 *  1. a temporary volume (tmpfs, or a plain directory) and the same python3 workload as
 *     `lockmig demo` in its own mount+pid namespace (OFD write lock, SQLite BEGIN EXCLUSIVE,
 *     flock);
 *  2. contenders lockmig did not write start hammering: a `flock -n` shell loop on the flock
 *     file and a python3 `F_OFD_SETLK` loop on the OFD file, counting attempts and wins;
 *  3. `runLocalHandover` (the library code of `lockmig handover`): dump, the vault takes the
 *     locked open file descriptions over (pidfd_getfd), the replacement starts through the
 *     restore shim in a new mount namespace and receives them, the source is stopped, the
 *     replacement holds every lock;
 *  4. the contenders stop and report; the kernel tables and one-shot contenders (flock(1),
 *     python3 fcntl, the sqlite3 CLI) check the replacement holds everything;
 *  5. a report (what moved with no window, what was re-taken and its measured window, the
 *     contenders' attempts/wins, step timings), then everything is cleaned up.
 *
 * The replacement gets a new mount namespace but stays in the host pid namespace: the
 * restore shim must exec in place (same pid) so the vault's pid check and the kernel check
 * apply to the very process that ends up holding the locks; `unshare --pid` would need a fork.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { readCheckpoint, formatRange, type Checkpoint } from '../image/index.js';
import { runLocalHandover, type LocalHandoverResult } from '../handover/local.js';
import {
  CLI, DemoError, type Proof, descendants, comm, parseLocks, procKind,
  contender, sqliteContender, fmtMs, table, startOldWorkload,
} from './run.js';
import { REPLACEMENT_PY, OFD_HAMMER_PY, FLOCK_HAMMER_SH } from './scripts.js';

export interface HandoverDemoOptions {
  readonly out: (line: string) => void;
  /** keep the volume and images for inspection (the processes are stopped regardless) */
  readonly keep?: boolean;
  /** called with the replacement's host pid while it still holds every lock, before cleanup */
  readonly pause?: (newPid: number) => Promise<void>;
}

export interface ContenderResult {
  readonly lock: string;
  readonly how: string;
  readonly attempts: number;
  readonly wins: number;
  readonly errors: number;
  /** attempts between "target ready, stopping the source" and "target holds every lock" (null: not measured) */
  readonly attemptsInWindow: number | null;
  readonly winsInWindow: number | null;
}

interface LockRow { readonly path: string; readonly kind: string; readonly type: string; readonly start: string; readonly end: string; readonly fd: number }

export interface HandoverDemoReport {
  readonly mode: 'handover';
  readonly oldPid: number;
  readonly newPid: number;
  readonly volume: string;
  readonly tmpfs: boolean;
  /** OFD/flock: the open file description never closed */
  readonly moved: readonly LockRow[];
  /** POSIX: re-taken by a waiter queued before the stop; window = grant after the stop signal */
  readonly retaken: readonly (LockRow & { queued: boolean; windowUs: number; afterExitUs: number })[];
  readonly contenders: readonly ContenderResult[];
  readonly proofs: readonly Proof[];
  readonly stopSignal: string;
  readonly stopToHoldMs: number;
  /** per step, in ms */
  readonly timings: Readonly<Record<string, number>>;
}

interface Hammer { readonly lock: string; readonly how: string; readonly child: ChildProcess; readonly started: Promise<boolean>; readonly result: Promise<string> }

function startHammer(lock: string, how: string, argv: readonly string[], stderr: { text: string }): Hammer {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => { stderr.text += d.toString(); });
  const lines: string[] = [];
  let onStarted: (ok: boolean) => void = () => {};
  const started = new Promise<boolean>((resolve) => { onStarted = resolve; });
  createInterface({ input: child.stdout! }).on('line', (l) => { lines.push(l); if (l === 'started') onStarted(true); });
  const result = new Promise<string>((resolve) => child.once('close', () => { onStarted(false); resolve(lines.filter((l) => l.startsWith('{')).pop() ?? ''); }));
  return { lock, how, child, started, result };
}

/** `p`, or `fallback` after `ms` (the timer is cleared, so it never keeps the process alive). */
async function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((res) => { timer = setTimeout(() => res(fallback), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

async function processGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    let state = '';
    try { state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '')[0] ?? ''; } catch { return true; }
    if (state === 'Z') return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function runHandoverDemo(opts: HandoverDemoOptions): Promise<HandoverDemoReport> {
  const out = opts.out;
  const cleanup: (() => void)[] = [];
  const volume = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-demo-vol-'));
  const imageDir = `${volume}.checkpoint`;
  const socketPath = `${volume}.vault.sock`;
  const stopFile = `${volume}.contenders-stop`;
  cleanup.push(() => {
    fs.rmSync(socketPath, { force: true });
    fs.rmSync(stopFile, { force: true });
    fs.rmSync(`${stopFile}.tmp`, { force: true });
    if (!opts.keep) { fs.rmSync(volume, { recursive: true, force: true }); fs.rmSync(imageDir, { recursive: true, force: true }); }
  });
  const tmpfs = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0755', 'lockmig-demo', volume], { encoding: 'utf8' }).status === 0;
  if (tmpfs) cleanup.push(() => { if (!opts.keep) spawnSync('umount', ['-l', volume]); });
  const children: ChildProcess[] = [];
  const extraPids: number[] = [];
  cleanup.push(() => {
    for (const c of children) {
      if (c.pid !== undefined) for (const d of descendants(c.pid)) { try { process.kill(d, 'SIGKILL'); } catch { /* gone */ } }
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    for (const p of extraPids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  });
  const hammerErr = { text: '' };
  try {
    out('lockmig demo --handover — same-node handover: OFD and flock locks move with no lock-free window');
    out(`  volume: ${volume} (${tmpfs ? 'tmpfs' : 'directory on the host file system'}), images: ${imageDir}, vault socket: ${socketPath}`);

    out('\n[1/5] starting the old workload (python3: OFD lock, SQLite BEGIN EXCLUSIVE, flock) in its own mount+pid namespaces');
    const { pid: oldPid } = await startOldWorkload(volume, children);
    out(`      old workload: host pid ${oldPid} (pid 1 in its own pid namespace)`);

    out('[2/5] starting independent contenders that hammer the locks until the end (not lockmig code)');
    const journal = path.join(volume, 'journal.lock');
    const leader = path.join(volume, 'leader.lock');
    const hammers: Hammer[] = [
      startHammer('journal.lock OFD', 'python3 F_OFD_SETLK loop', ['python3', '-c', OFD_HAMMER_PY, journal, stopFile], hammerErr),
      startHammer('leader.lock FLOCK', 'sh loop: flock -n -x', ['sh', '-c', FLOCK_HAMMER_SH, 'flock-hammer', leader, stopFile], hammerErr),
    ];
    children.push(...hammers.map((h) => h.child));
    for (const h of hammers) {
      const ok = await within(h.started, 10_000, false);
      if (!ok) throw new DemoError(`contender "${h.how}" did not start; stderr: ${hammerErr.text}`);
    }
    out(`      ${hammers.map((h) => `${h.how} on ${h.lock.split(' ')[0]} (pid ${h.child.pid})`).join('; ')}`);

    out('[3/5] handing over with the code of `lockmig handover`: dump → vault takes the descriptions (pidfd_getfd)');
    out('      → replacement starts through the restore shim (new mount namespace) and receives them → the source is stopped');
    let readyNs = 0n;
    let holdsNs = 0n;
    const steps: string[] = [];
    const r: LocalHandoverResult = await runLocalHandover({
      pid: oldPid, tree: true, imageDir, socketPath, name: `demo/pid-${oldPid}`,
      timeoutMs: 15_000, graceMs: 5_000,
      command: ['python3', '-c', REPLACEMENT_PY],
      restoreArgs: ['--allow', volume],
      // `unshare --mount` execs in place: the shim (and then python3) keep the spawned pid
      lockmigArgv: ['unshare', '--mount', process.execPath, CLI],
      stdio: 'ignore',
      onProgress: (s) => {
        steps.push(s);
        if (s === 'target-ready') readyNs = process.hrtime.bigint();
        if (s === 'target-holds') holdsNs = process.hrtime.bigint();
        if (s === 'target-started') out('      replacement started through the shim; it is receiving the descriptions');
        if (s === 'target-ready') out('      replacement ready (descriptions placed, POSIX waits queued): stopping the old workload');
      },
    });
    const newPid = r.targetPid;
    extraPids.push(newPid);
    // the shim execs python3 right after reporting "held"
    for (let i = 0; i < 200 && !comm(newPid).startsWith('python'); i++) await new Promise((res) => setTimeout(res, 10));
    out(`      replacement: host pid ${newPid} (${comm(newPid) || 'gone'}); old workload stopped with ${r.stopSignal}`);

    out('[4/5] stopping the contenders; checking with the kernel and programs lockmig did not write');
    const tmp = `${stopFile}.tmp`;
    fs.writeFileSync(tmp, `${readyNs} ${holdsNs}\n`);
    fs.renameSync(tmp, stopFile);
    const contenders: ContenderResult[] = [];
    for (const h of hammers) {
      const line = await within(h.result, 10_000, '');
      if (!line) throw new DemoError(`contender "${h.how}" gave no result; stderr: ${hammerErr.text}`);
      const j = JSON.parse(line) as { attempts: number; wins: number; errors: number; lastError: string; attemptsInWindow: number | null; winsInWindow: number | null };
      contenders.push({ lock: h.lock, how: h.how, attempts: j.attempts, wins: j.wins, errors: j.errors, attemptsInWindow: j.attemptsInWindow, winsInWindow: j.winsInWindow });
      if (j.errors > 0) hammerErr.text += `${h.how}: ${j.errors} error(s) ${j.lastError}\n`;
    }

    const ckpt: Checkpoint = readCheckpoint(imageDir);
    const pathOf = new Map(ckpt.files.map((f) => [f.id, f.path]));
    const proofs: Proof[] = [];
    proofs.push({ what: 'every lock', how: 'lockmig handover kernel check', ok: r.verified.ok, detail: r.verified.ok ? 'fdinfo + /proc/locks' : r.verified.problems.join('; ') });
    for (const c of contenders) {
      const ok = c.wins === 0 && c.errors === 0 && c.attempts > 0;
      proofs.push({
        what: c.lock, how: `${c.how} during the migration`, ok,
        detail: `${c.attempts} attempts, ${c.wins} wins${c.errors ? `, ${c.errors} errors` : ''}${c.attempts === 0 ? ' (never ran)' : ''}`,
      });
    }
    const procLocks = parseLocks(fs.readFileSync('/proc/locks', 'utf8'));
    for (const l of ckpt.locks) {
      const file = pathOf.get(l.fileId)!;
      const ino = fs.statSync(file, { bigint: true }).ino;
      const k = procLocks.filter((p) => p.ino === ino && p.kind === procKind(l.kind) && p.type === l.type && p.start === l.start && p.end === l.end);
      let ok: boolean;
      let how: string;
      if (l.kind === 'POSIX') {
        ok = k.some((p) => p.pid === newPid);
        how = '/proc/locks owner';
      } else {
        let info = '';
        try { info = fs.readFileSync(`/proc/${newPid}/fdinfo/${l.fd}`, 'utf8'); } catch { /* gone */ }
        const onFd = parseLocks(info.split('\n').filter((x) => x.startsWith('lock:')).join('\n')).some((p) => p.ino === ino && p.kind === procKind(l.kind) && p.type === l.type);
        ok = k.length > 0 && onFd;
        how = `/proc/locks + /proc/${newPid}/fdinfo/${l.fd}`;
      }
      proofs.push({ what: `${path.basename(file)} ${l.kind} ${l.type}`, how, ok, detail: ok ? (l.kind === 'POSIX' ? `owner pid ${newPid}` : `held on fd ${l.fd} of pid ${newPid}`) : 'NOT held by the replacement' });
      const c = contender(l, file);
      proofs.push({ what: `${path.basename(file)} ${l.kind} ${l.type}`, how: c.how, ok: c.refused, detail: c.refused ? `refused (${c.detail})` : c.detail });
    }
    const s = sqliteContender(path.join(volume, 'app.db'));
    proofs.push({ what: 'app.db (SQLite)', how: s.how, ok: s.refused, detail: s.detail });

    const row = (l: (typeof ckpt.locks)[number]): LockRow => ({
      path: pathOf.get(l.fileId)!, kind: l.kind, type: l.type, start: l.start.toString(), end: l.end === 'EOF' ? 'EOF' : l.end.toString(), fd: l.fd,
    });
    const moved = r.moved.map(row);
    const retaken = r.retaken.map((t) => ({ ...row(t.lock), queued: t.queued, windowUs: t.grantAfterStopUs, afterExitUs: t.grantAfterExitUs }));
    const m = r.timings;
    const d = (a: string, b: string) => (m[b] ?? NaN) - (m[a] ?? 0);
    const timings: Record<string, number> = {
      dumpMs: m['dumped'] ?? NaN, writeImageMs: d('dumped', 'image-written'), takeOverMs: d('image-written', 'taken-over'),
      targetReadyMs: d('taken-over', 'target-ready'), stopSourceMs: d('target-ready', 'source-stopped'),
      untilHeldMs: d('source-stopped', 'target-holds'), verifyMs: d('target-holds', 'verified'), totalMs: m['verified'] ?? NaN,
    };

    out('\n[5/5] report');
    out('\nMoved with no window (OFD/flock: the open file description was never closed — old workload, vault, shim, replacement):');
    out(table([
      ['FILE', 'KIND', 'TYPE', 'RANGE', 'OLD HOLDER', 'NEW HOLDER'],
      ...moved.map((x) => [path.basename(x.path), x.kind, x.type, formatRange({ start: BigInt(x.start), end: x.end === 'EOF' ? 'EOF' : BigInt(x.end) }), `pid ${oldPid} fd ${x.fd}`, `pid ${newPid} fd ${x.fd}`]),
    ]).join('\n'));
    out('\nRe-taken (POSIX locks belong to the process: a F_SETLKW queued before the stop is granted when the old workload exits):');
    out(retaken.length === 0 ? '  (none)' : table([
      ['FILE', 'TYPE', 'RANGE', 'QUEUED IN TIME', 'WINDOW (≤ grant after stop signal)', 'AFTER EXIT SEEN'],
      ...retaken.map((x) => [path.basename(x.path), x.type, `${x.start} ${x.end}`, x.queued ? 'yes' : 'NO', `${(x.windowUs / 1000).toFixed(3)} ms`, `${(x.afterExitUs / 1000).toFixed(3)} ms`]),
    ]).join('\n'));
    out('\nContenders (independent programs, hammering from before the dump until after the replacement held everything):');
    out(table([
      ['LOCK', 'CONTENDER', 'ATTEMPTS', 'WINS', 'ATTEMPTS STOP→HELD'],
      ...contenders.map((c) => [c.lock, c.how, String(c.attempts), String(c.wins), c.attemptsInWindow === null ? '(not timed)' : String(c.attemptsInWindow)]),
    ]).join('\n'));
    out('\nProof (kernel tables, the contenders above, and one-shot contenders after the handover):');
    out(table([['LOCK', 'CHECKED WITH', 'RESULT'], ...proofs.map((p) => [p.what, p.how, `${p.ok ? 'OK  ' : 'FAIL'} ${p.detail}`])]).join('\n'));
    out('\nHow long each step took:');
    out(table([
      ['STEP', 'TIME'],
      ['dump (read /proc)', fmtMs(timings.dumpMs!)],
      ['write the images', fmtMs(timings.writeImageMs!)],
      ['vault takes the descriptions (pidfd_getfd)', fmtMs(timings.takeOverMs!)],
      ['replacement starts, receives, queues POSIX waits', fmtMs(timings.targetReadyMs!)],
      [`stop the old workload (${r.stopSignal})`, fmtMs(timings.stopSourceMs!)],
      ['until the replacement holds every lock', fmtMs(timings.untilHeldMs!)],
      ['stop signal → every lock held (shim clock)', fmtMs(r.stopToHoldMs)],
      ['total', fmtMs(timings.totalMs!)],
    ]).join('\n'));
    const failed = proofs.filter((p) => !p.ok);
    out(failed.length === 0
      ? `\nAll ${ckpt.locks.length} locks are held by the replacement (pid ${newPid}); the OFD and flock locks were never free.`
      : `\n${failed.length} check(s) FAILED: ${failed.map((f) => `${f.what} (${f.how}: ${f.detail})`).join('; ')}`);
    if (hammerErr.text.trim()) out(`contender stderr: ${hammerErr.text.trim()}`);
    if (opts.pause) await opts.pause(newPid);
    if (opts.keep) out(`kept: volume ${volume}, images ${imageDir}; the replacement was stopped.`);
    return {
      mode: 'handover', oldPid, newPid, volume, tmpfs, moved, retaken, contenders, proofs,
      stopSignal: r.stopSignal, stopToHoldMs: r.stopToHoldMs, timings,
    };
  } finally {
    if (!fs.existsSync(stopFile)) { try { fs.writeFileSync(stopFile, '0 0\n'); } catch { /* best effort */ } }
    for (const c of cleanup.reverse()) { try { c(); } catch { /* best effort */ } }
    for (const p of extraPids) await processGone(p, 5000);
  }
}
