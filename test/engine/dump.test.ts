/**
 * dumpProcesses on real processes (python3 holders) checked against the kernel's own view
 * (/proc/locks, lslocks) and CRIU's crit: kinds, ranges, sharing, inheritance, big offsets,
 * odd paths, unrestorable fds, the /proc/locks fallback, other mount namespaces.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpProcesses, DumpError } from '../../src/engine/dump.js';
import { readCheckpoint, writeCheckpoint, type Checkpoint, type LockRecord } from '../../src/image/index.js';
import { parseProcLocks } from '../../src/proc/index.js';
import { missing, runCli } from '../helpers/env.js';
import { startHolder, PYTHON, type Holder, type HolderAction } from '../proc/holder.js';

const skip = missing({ root: true, tools: ['lslocks', PYTHON] }, 'dump of real processes');

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) c(); });
function tmp(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'lockmig-dump-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
async function hold(actions: HolderAction[], opts?: { wrap?: readonly string[] }): Promise<Holder> {
  const h = await startHolder(actions, opts);
  cleanups.push(() => h.kill());
  return h;
}
const pidOf = (h: Holder, role = 'root') => h.procs.get(role)!.pid;
const fdOf = (h: Holder, name: string, role = 'root') => h.procs.get(role)!.fds[name]!;

/** "KIND TYPE start end ino" for comparing with the kernel. */
function sig(c: Checkpoint, l: LockRecord): string {
  const f = c.files.find((x) => x.id === l.fileId)!;
  return `${l.kind} ${l.type} ${l.start} ${l.end} ${f.dev.major}:${f.dev.minor}:${f.ino}${l.kind === 'POSIX' ? ` pid${l.pid}` : ''}`;
}
/**
 * The same signature for every /proc/locks lock on the given files ("maj:min:ino" keys: other
 * processes on this machine hold locks on other filesystems with the same inode numbers).
 */
function kernelLocks(files: ReadonlySet<string>): string[] {
  return parseProcLocks(readFileSync('/proc/locks', 'utf8')).locks
    .filter((l) => l.file && files.has(`${l.file.major}:${l.file.minor}:${l.file.ino}`))
    .map((l) => `${l.kind === 'OFDLCK' ? 'OFD' : l.kind} ${l.type} ${l.start} ${l.end} ${l.file!.major}:${l.file!.minor}:${l.file!.ino}${l.kind === 'POSIX' ? ` pid${l.pid}` : ''}`)
    .sort();
}
const sigs = (c: Checkpoint) => c.locks.map((l) => sig(c, l)).sort();
const inoOf = (p: string) => BigInt(statSync(p).ino);
/** "maj:min:ino" of a path, as /proc/locks prints the device (Linux dev_t encoding). */
const fileKey = (p: string) => {
  const st = statSync(p);
  return `${(st.dev >> 8) & 0xfff}:${(st.dev & 0xff) | ((st.dev >> 12) & 0xfff00)}:${st.ino}`;
};
const withoutTime = (c: Checkpoint) => ({ ...c, createdAt: '', method: '' });

describe.skipIf(skip)('dumpProcesses', () => {
  it('records every lock with its fd, path, flags, offset and CLOEXEC, as /proc/locks and lslocks see them', async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'o', path: `${d}/ofd` },
      { op: 'ofd', fd: 'o', type: 'w', start: 10n, len: 20n },
      { op: 'ofd', fd: 'o', type: 'r', start: 50n },
      { op: 'seek', fd: 'o', pos: 12345n },
      { op: 'open', name: 'p', path: `${d}/posix`, cloexec: true },
      { op: 'posix', fd: 'p', type: 'w', start: 0n, len: 10n },
      { op: 'posix', fd: 'p', type: 'r', start: 100n, len: 5n },
      { op: 'open', name: 'fr', path: `${d}/flock-r`, mode: 'ro' },
      { op: 'flock', fd: 'fr', type: 'r' },
      { op: 'open', name: 'fw', path: `${d}/flock-w` },
      { op: 'flock', fd: 'fw', type: 'w' },
      { op: 'open', name: 'unlocked', path: `${d}/unlocked` },
      { op: 'open', name: 'p2', path: `${d}/posix` },
    ]);
    let progress = 0;
    const c = dumpProcesses({ pids: [pidOf(h)], onProgress: () => { progress++; } });
    expect(c.method).toBe('fdinfo');
    expect(progress).toBeGreaterThan(0);
    const keys = new Set(['ofd', 'posix', 'flock-r', 'flock-w', 'unlocked'].map((n) => fileKey(`${d}/${n}`)));
    expect(sigs(c)).toEqual(kernelLocks(keys));
    expect(c.locks).toHaveLength(6);

    const lsl = spawnSync('lslocks', ['--json', '--bytes', '-o', 'PID,TYPE,MODE,START,END,MAJ:MIN,INODE'], { encoding: 'utf8' });
    expect(lsl.status, lsl.stderr).toBe(0);
    type LsLock = { pid: number; type: string; mode: string; start: number; end: number; 'maj:min': string; inode: number };
    const fromLs = (JSON.parse(lsl.stdout).locks as LsLock[])
      .filter((l) => keys.has(`${l['maj:min']}:${l.inode}`))
      .map((l) => `${l.type === 'OFDLCK' ? 'OFD' : l.type} ${l.mode} ${l.start} ${l.end === 0 ? 'EOF' : l.end} ${l['maj:min']}:${l.inode}${l.type === 'POSIX' ? ` pid${l.pid}` : ''}`)
      .sort();
    expect(sigs(c)).toEqual(fromLs);

    const file = (name: string) => c.files.find((f) => f.path === `${d}/${name}`)!;
    // p2 is a second, unlocked description of a locked file: not part of the lock state
    expect(c.files.map((f) => f.path).sort()).toEqual(['flock-r', 'flock-w', 'ofd', 'posix'].map((n) => `${d}/${n}`));
    expect(c.fds.map((x) => x.fd)).not.toContain(fdOf(h, 'p2'));
    expect(c.files.map((f) => f.id).sort()).toEqual([1, 2, 3, 4]);
    expect(file('ofd').pos).toBe(12345n);
    expect(file('ofd').flags & 0o3).toBe(2);
    expect(file('flock-r').flags & 0o3).toBe(0);
    expect(file('ofd').ino).toBe(inoOf(`${d}/ofd`));
    expect(file('ofd').relPath).toBe(path.relative(file('ofd').mountPoint, `${d}/ofd`));
    const fdRec = (n: string) => c.fds.find((x) => x.fd === fdOf(h, n))!;
    expect(fdRec('p').cloexec).toBe(true);
    expect(fdRec('o').cloexec).toBe(false);
    for (const l of c.locks) expect(l.pid).toBe(pidOf(h));
    expect(c.locks.find((l) => l.kind === 'POSIX' && l.type === 'READ')).toMatchObject({ fd: fdOf(h, 'p'), start: 100n, end: 104n });
    expect(c.skipped).toEqual([]);
  });

  it('records a description shared by dup and fork once, with every fd; separate opens stay separate', async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'a', path: `${d}/shared` },
      { op: 'ofd', fd: 'a', type: 'w', start: 0n, len: 100n },
      { op: 'dup', fd: 'a', as: 'a2', to: 40 },
      { op: 'open', name: 'f', path: `${d}/flocked` },
      { op: 'flock', fd: 'f', type: 'w' },
      { op: 'open', name: 'x1', path: `${d}/two` },
      { op: 'open', name: 'x2', path: `${d}/two` },
      { op: 'ofd', fd: 'x1', type: 'r', start: 0n, len: 10n },
      { op: 'ofd', fd: 'x2', type: 'r', start: 0n, len: 10n },
      { op: 'fork', role: 'child', actions: [] },
    ]);
    const c = dumpProcesses({ pids: [pidOf(h)], tree: true });
    expect(c.processes.map((p) => p.pid)).toEqual([pidOf(h), pidOf(h, 'child')]);
    const shared = c.files.find((f) => f.path === `${d}/shared`)!;
    expect(c.locks.filter((l) => l.fileId === shared.id)).toEqual([
      { kind: 'OFD', type: 'WRITE', start: 0n, end: 99n, pid: pidOf(h), fd: fdOf(h, 'a'), fileId: shared.id },
    ]);
    expect(c.fds.filter((x) => x.fileId === shared.id).map((x) => `${x.pid}:${x.fd}`)).toEqual([
      `${pidOf(h)}:${fdOf(h, 'a')}`, `${pidOf(h)}:40`, `${pidOf(h, 'child')}:${fdOf(h, 'a')}`, `${pidOf(h, 'child')}:40`,
    ]);
    const fl = c.files.find((f) => f.path === `${d}/flocked`)!;
    expect(c.locks.filter((l) => l.fileId === fl.id)).toHaveLength(1);
    expect(c.fds.filter((x) => x.fileId === fl.id)).toHaveLength(2);
    const two = c.files.filter((f) => f.path === `${d}/two`);
    expect(two).toHaveLength(2); // same inode, two descriptions: kcmp tells them apart
    expect(c.locks.filter((l) => two.some((f) => f.id === l.fileId)).map((l) => l.fd).sort())
      .toEqual([fdOf(h, 'x1'), fdOf(h, 'x2')].sort());
    expect(sigs(c)).toEqual(kernelLocks(new Set([fileKey(`${d}/shared`), fileKey(`${d}/flocked`), fileKey(`${d}/two`)])));
  });

  it("keeps a child's POSIX lock taken through a description inherited from its parent (CRIU drops it)", async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'db', path: `${d}/db` },
      { op: 'posix', fd: 'db', type: 'w', start: 0n, len: 100n },
      { op: 'fork', role: 'child', actions: [{ op: 'posix', fd: 'db', type: 'w', start: 100n, len: 100n }] },
    ]);
    for (const method of ['fdinfo', 'proc-locks'] as const) {
      const c = dumpProcesses({ pids: [pidOf(h)], tree: true, method });
      expect(c.files).toHaveLength(1);
      expect(c.locks).toEqual([
        { kind: 'POSIX', type: 'WRITE', start: 0n, end: 99n, pid: pidOf(h), fd: fdOf(h, 'db'), fileId: 1 },
        { kind: 'POSIX', type: 'WRITE', start: 100n, end: 199n, pid: pidOf(h, 'child'), fd: fdOf(h, 'db'), fileId: 1 },
      ]);
      expect(sigs(c)).toEqual(kernelLocks(new Set([fileKey(`${d}/db`)])));
    }
  });

  it('keeps 2^62 offsets and lengths exact from fdinfo through the image', async () => {
    const d = tmp();
    const P62 = 1n << 62n;
    const h = await hold([
      { op: 'open', name: 'b', path: `${d}/big` },
      { op: 'ofd', fd: 'b', type: 'w', start: P62, len: P62 - 1n },
      { op: 'open', name: 'q', path: `${d}/big2` },
      { op: 'posix', fd: 'q', type: 'r', start: 1n << 61n, len: P62 },
      { op: 'posix', fd: 'q', type: 'w', start: 0n, len: P62 + 1n },
    ]);
    const c = dumpProcesses({ pids: [pidOf(h)] });
    const ends = c.locks.map((l) => [l.start, l.end]);
    // the WRITE lock [0, 2^62] splits the same process's READ lock [2^61, 2^61+2^62-1]
    expect(ends).toEqual([[P62, P62 + P62 - 2n], [0n, P62], [P62 + 1n, (1n << 61n) + P62 - 1n]]);
    expect(sigs(c)).toEqual(kernelLocks(new Set([fileKey(`${d}/big`), fileKey(`${d}/big2`)])));
    const out = tmp();
    writeCheckpoint(out, c);
    expect(readCheckpoint(out)).toEqual(c);
  });

  it('records paths with spaces and newlines; reports deleted files, memfds and sockets it cannot reopen', async () => {
    const d = tmp();
    const odd = `${d}/a b\nc`;
    const h = await hold([
      { op: 'open', name: 'odd', path: odd },
      { op: 'flock', fd: 'odd', type: 'w' },
      { op: 'open', name: 'gone', path: `${d}/gone` },
      { op: 'ofd', fd: 'gone', type: 'w' },
      { op: 'unlink', path: `${d}/gone` },
      { op: 'open', name: 'named', path: `${d}/really (deleted)` },
      { op: 'ofd', fd: 'named', type: 'r' },
      { op: 'memfd', name: 'm' },
      { op: 'ofd', fd: 'm', type: 'w' },
      { op: 'socket', name: 's' },
      { op: 'open', name: 'latin1', path: '', pathHex: Buffer.concat([Buffer.from(`${d}/caf`), Buffer.from([0xe9])]).toString('hex') },
      { op: 'flock', fd: 'latin1', type: 'w' },
    ]);
    const c = dumpProcesses({ pids: [pidOf(h)] });
    expect(c.files.map((f) => f.path).sort()).toEqual([odd, `${d}/really (deleted)`].sort());
    const out = tmp();
    writeCheckpoint(out, c);
    expect(readCheckpoint(out).files.find((f) => f.path === odd)?.relPath).toContain('a b\nc');
    const sk = new Map(c.skipped.map((s) => [s.fd, s]));
    expect(sk.get(fdOf(h, 'gone'))).toMatchObject({ reason: 'deleted', locked: true, target: `${d}/gone (deleted)` });
    expect(sk.get(fdOf(h, 'gone'))!.message).toMatch(/unlinked/);
    expect(sk.get(fdOf(h, 'm'))).toMatchObject({ reason: 'memfd', locked: true });
    expect(sk.has(fdOf(h, 's'))).toBe(false); // not locked, not sharing a locked description
    expect(sk.get(fdOf(h, 'latin1'))).toMatchObject({ reason: 'other', locked: true });
    expect(sk.get(fdOf(h, 'latin1'))!.message).toMatch(/not valid UTF-8/);
    expect(c.locks.map((l) => l.fd).sort()).toEqual([fdOf(h, 'odd'), fdOf(h, 'named')].sort());
  });

  it('the /proc/locks fallback gives the same checkpoint as fdinfo, and its probes change no lock', async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'o', path: `${d}/ofd` },
      { op: 'ofd', fd: 'o', type: 'w', start: 10n, len: 20n },
      { op: 'ofd', fd: 'o', type: 'r', start: 50n },
      { op: 'open', name: 'o2', path: `${d}/ofd` },
      { op: 'ofd', fd: 'o2', type: 'r', start: 40n, len: 20n },
      { op: 'open', name: 'p', path: `${d}/posix` },
      { op: 'posix', fd: 'p', type: 'w', start: 0n, len: 10n },
      { op: 'open', name: 'f', path: `${d}/flock` },
      { op: 'flock', fd: 'f', type: 'r' },
      { op: 'dup', fd: 'o', as: 'od' },
      { op: 'fork', role: 'child', actions: [
        { op: 'posix', fd: 'p', type: 'r', start: 20n, len: 5n },
        { op: 'open', name: 'cf', path: `${d}/child-flock` },
        { op: 'flock', fd: 'cf', type: 'w' },
      ] },
    ]);
    const keys = new Set(['ofd', 'posix', 'flock', 'child-flock'].map((n) => fileKey(`${d}/${n}`)));
    const before = kernelLocks(keys);
    const a = dumpProcesses({ pids: [pidOf(h)], tree: true, method: 'fdinfo' });
    const b = dumpProcesses({ pids: [pidOf(h)], tree: true, method: 'proc-locks' });
    expect(b.method).toBe('proc-locks');
    expect(withoutTime(b)).toEqual(withoutTime(a));
    expect(a.locks).toHaveLength(7);
    expect(kernelLocks(keys)).toEqual(before);

    process.env.LOCKMIG_FORCE_PROC_LOCKS = '1';
    try {
      expect(dumpProcesses({ pids: [pidOf(h)], tree: true, method: 'auto' }).method).toBe('proc-locks');
    } finally {
      delete process.env.LOCKMIG_FORCE_PROC_LOCKS;
    }
  });

  it("the fallback attributes zdtm's four overlapping OFD read locks (file_locks06) by elimination", async () => {
    const d = tmp();
    const spec: [bigint, bigint][] = [[0n, 20n], [10n, 30n], [0n, 100n], [70n, 200n]];
    const h = await hold(spec.flatMap(([start, len], i): HolderAction[] => [
      { op: 'open', name: `f${i}`, path: `${d}/overlap` },
      { op: 'ofd', fd: `f${i}`, type: 'r', start, len },
    ]));
    const a = dumpProcesses({ pids: [pidOf(h)], method: 'fdinfo' });
    expect(a.locks.map((l) => [l.fd, l.start, l.end])).toEqual(spec.map(([s0, len], i) => [fdOf(h, `f${i}`), s0, s0 + len - 1n]));
    expect(a.warnings).toBeUndefined();
    const b = dumpProcesses({ pids: [pidOf(h)], method: 'proc-locks' });
    expect(b.warnings).toBeUndefined();
    expect(withoutTime(b)).toEqual(withoutTime(a));
  });

  it('the fallback never guesses: identical OFD read locks on two descriptions are named in warnings', async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'x', path: `${d}/dup-range` },
      { op: 'ofd', fd: 'x', type: 'r', start: 0n, len: 10n },
      { op: 'open', name: 'y', path: `${d}/dup-range` },
      { op: 'ofd', fd: 'y', type: 'r', start: 0n, len: 10n },
      { op: 'open', name: 'z', path: `${d}/dup-range` },
    ]);
    expect(dumpProcesses({ pids: [pidOf(h)], method: 'fdinfo' }).locks).toHaveLength(2);
    const b = dumpProcesses({ pids: [pidOf(h)], method: 'proc-locks' });
    expect(b.locks).toEqual([]);
    expect(b.warnings).toHaveLength(2);
    for (const w of b.warnings!) expect(w).toMatch(/OFD READ lock 0-9 on .*dup-range not recorded: .*use the fdinfo method/);
    const out = tmp();
    writeCheckpoint(out, b);
    expect(readCheckpoint(out).warnings).toEqual(b.warnings);
    const t = runCli(['inspect', out]);
    expect(t.stdout).toMatch(/warnings:\n  OFD READ lock 0-9/);
  });

  it('ignores locks of processes outside the tree without failing', async () => {
    const d = tmp();
    const outsider = await hold([
      { op: 'open', name: 'x', path: `${d}/data` },
      { op: 'posix', fd: 'x', type: 'r', start: 0n, len: 10n },
      { op: 'open', name: 's', path: `${d}/shared` },
      { op: 'ofd', fd: 's', type: 'r', start: 0n, len: 10n },
      { op: 'fork', role: 'inside', actions: [
        { op: 'open', name: 'y', path: `${d}/data` },
        { op: 'ofd', fd: 'y', type: 'r', start: 5n, len: 10n },
      ] },
    ]);
    const inside = pidOf(outsider, 'inside');
    for (const method of ['fdinfo', 'proc-locks'] as const) {
      const c = dumpProcesses({ pids: [inside], method });
      expect(c.processes.map((p) => p.pid)).toEqual([inside]);
      // its own OFD lock, and the OFD lock on the description it inherited; not the parent's POSIX lock
      expect(c.locks.map((l) => `${l.kind} ${l.start}-${l.end} ${l.pid}`).sort()).toEqual([`OFD 0-9 ${inside}`, `OFD 5-14 ${inside}`]);
    }
  });

  it('reads a process in another mount and pid namespace through /proc/<pid>/root', async () => {
    const d = tmp();
    const ns = `${d}/ns`;
    rmSync(ns, { force: true, recursive: true });
    spawnSync('mkdir', ['-p', ns]);
    const h = await hold([
      { op: 'open', name: 'v', path: `${ns}/vol file` },
      { op: 'ofd', fd: 'v', type: 'w', start: 0n, len: 1n },
      { op: 'open', name: 'p', path: `${ns}/posix` },
      { op: 'posix', fd: 'p', type: 'r', start: 7n, len: 3n },
    ], { wrap: ['unshare', '--mount', '--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c', 'mount -t tmpfs lockmigtest "$0" && exec "$@"', ns] });
    const c = dumpProcesses({ pids: [h.child.pid!], tree: true });
    expect(c.locks.map((l) => `${l.kind} ${l.type} ${l.start}-${l.end}`)).toEqual(['OFD WRITE 0-0', 'POSIX READ 7-9']);
    const f = c.files[0]!;
    expect(f).toMatchObject({ path: `${ns}/vol file`, mountPoint: ns, relPath: 'vol file' });
    expect(f.dev.major).toBe(0); // the namespace's tmpfs, not the host directory underneath
    const proc = c.processes.find((p) => p.pid === c.locks[0]!.pid)!;
    expect(proc.nsPid).toBe(1);
    expect(proc.pid).not.toBe(1);
    // POSIX owners are host pids with both methods
    expect(c.locks[1]!.pid).toBe(proc.pid);
    expect(withoutTime(dumpProcesses({ pids: [h.child.pid!], tree: true, method: 'proc-locks' }))).toEqual(withoutTime(c));
  });

  it('records leases, and only the kinds asked for', async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'l', path: `${d}/leased`, mode: 'ro' },
      { op: 'lease', fd: 'l', type: 'r' },
      { op: 'open', name: 'o', path: `${d}/ofd` },
      { op: 'ofd', fd: 'o', type: 'w' },
    ]);
    const c = dumpProcesses({ pids: [pidOf(h)] });
    expect(c.locks.map((l) => `${l.kind} ${l.type} ${l.fd}`)).toEqual([`LEASE READ ${fdOf(h, 'l')}`, `OFD WRITE ${fdOf(h, 'o')}`]);
    expect(sigs(c)).toEqual(kernelLocks(new Set([fileKey(`${d}/leased`), fileKey(`${d}/ofd`)])));
    const only = dumpProcesses({ pids: [pidOf(h)], kinds: ['OFD'] });
    expect(only.locks.map((l) => l.kind)).toEqual(['OFD']);
    expect(only.files.map((f) => f.path)).toEqual([`${d}/ofd`]);
  });

  it('names the pid that does not exist', () => {
    expect(() => dumpProcesses({ pids: [2 ** 22 + 12345] })).toThrow(DumpError);
    expect(() => dumpProcesses({ pids: [2 ** 22 + 12345] })).toThrow(/process 4206649 does not exist/);
  });

  it('a process that has exited (a zombie: its fd table is gone) is refused, not dumped as a process holding nothing', () => {
    const d = tmp();
    // python3: a child takes a flock and exits; the parent does not reap it and prints its pid
    const py = `import fcntl, os, sys, time\nr, w = os.pipe()\npid = os.fork()\nif pid == 0:\n    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n    fcntl.flock(fd, fcntl.LOCK_EX)\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(30)\n`;
    const parent = spawnSync('sh', ['-c', `${PYTHON} -c "$0" "$1" >"$2" 2>&1 & echo $!; sleep 0.5`, py, `${d}/held`, `${d}/child`], { encoding: 'utf8', timeout: 10_000 });
    const parentPid = Number(parent.stdout.trim());
    const zombie = Number(readFileSync(`${d}/child`, 'utf8').trim());
    cleanups.push(() => { try { process.kill(parentPid, 'SIGKILL'); } catch { /* gone */ } });
    expect(readFileSync(`/proc/${zombie}/stat`, 'utf8')).toMatch(/\) Z /);
    expect(() => dumpProcesses({ pids: [zombie] })).toThrow(/process \d+ does not exist/);
  });

  it('a process killed while its 15,000 fds are being read fails the dump instead of returning a checkpoint that lacks its locks', async () => {
    const d = tmp();
    const py = `import fcntl, os, sys, time\nfd = os.open(sys.argv[1] + '/flock', os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\nkeep = [os.open(sys.argv[1] + '/wide', os.O_RDONLY | os.O_CREAT) for _ in range(15000)]\nprint('ready', flush=True)\ntime.sleep(60)\n`;
    let observed = 0;
    for (let attempt = 0; attempt < 4 && observed === 0; attempt++) {
      const child = spawn(PYTHON, ['-c', py, d], { stdio: ['ignore', 'pipe', 'inherit'] });
      cleanups.push(() => child.kill('SIGKILL'));
      await new Promise<void>((resolve, reject) => { child.stdout.once('data', () => resolve()); child.once('exit', () => reject(new Error('holder exited'))); });
      const pid = child.pid!;
      // an independent killer process fires while the (synchronous) dump reads the fds
      spawnSync('sh', ['-c', `(sleep 0.0${2 + attempt}; kill -9 ${pid}) >/dev/null 2>&1 &`]);
      let result: Checkpoint | Error;
      try { result = dumpProcesses({ pids: [pid] }); } catch (err) { result = err as Error; }
      if (result instanceof Error) {
        expect(result).toBeInstanceOf(DumpError);
        expect(result.message).toMatch(/exited during the dump|does not exist/);
        observed++;
      } else {
        // the kill came after the dump: then the checkpoint is complete
        expect(result.locks.map((l) => l.kind)).toEqual(['FLOCK']);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(observed, 'a kill landed during the dump in one of 4 attempts').toBeGreaterThan(0);
  });
});

describe.skipIf(skip)('lockmig dump / inspect', () => {
  it('dumps through the CLI, inspects as a table and as JSON, and crit decodes the same locks', async () => {
    const d = tmp();
    const h = await hold([
      { op: 'open', name: 'o', path: `${d}/ofd file` },
      { op: 'ofd', fd: 'o', type: 'w', start: 10n, len: 20n },
      { op: 'open', name: 'p', path: `${d}/posix` },
      { op: 'posix', fd: 'p', type: 'r', start: 1n << 62n, len: 5n },
    ]);
    const out = path.join(tmp(), 'ckpt');
    const r = runCli(['dump', '--pid', String(pidOf(h)), '--out', out, '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ locks: 2, byKind: { OFD: 1, POSIX: 1 }, method: 'fdinfo' });
    expect(statSync(out).mode & 0o777).toBe(0o700);
    expect(r.stderr).toContain('"message":"progress"');

    const t = runCli(['inspect', out]);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/KIND\s+TYPE\s+RANGE\s+PID\s+FD\s+PATH/);
    expect(t.stdout).toMatch(new RegExp(`OFD\\s+WRITE\\s+10 29\\s+${pidOf(h)}\\s+${fdOf(h, 'o')}\\s+"${d}/ofd file"`));
    expect(t.stdout).toMatch(/POSIX\s+READ\s+4611686018427387904 4611686018427387908/);
    const j = runCli(['inspect', out, '--json']);
    expect(JSON.parse(j.stdout).locks[1]).toMatchObject({ kind: 'POSIX', start: '4611686018427387904', end: '4611686018427387908' });

    if (!missing({ tools: ['crit'] }, 'crit decode of a real dump')) {
      const cr = spawnSync('crit', ['decode', '-i', path.join(out, 'filelocks.img')], { encoding: 'utf8' });
      expect(cr.status, cr.stderr).toBe(0);
      expect(cr.stdout).toContain(`{"flag": 4, "type": 1, "pid": ${pidOf(h)}, "fd": ${fdOf(h, 'o')}, "start": 10, "len": 20}`);
      expect(cr.stdout).toContain(`{"flag": 1, "type": 0, "pid": ${pidOf(h)}, "fd": ${fdOf(h, 'p')}, "start": 4611686018427387904, "len": 5}`);
    }

    const bad = path.join(out, 'filelocks.img');
    spawnSync('truncate', ['-s', '10', bad]);
    const e = runCli(['inspect', out]);
    expect(e.status).toBe(5);
    expect(e.stderr).toMatch(/TRUNCATED.*filelocks\.img/);
  });

  it('LOCKMIG_FORCE_PROC_LOCKS=1 makes the CLI use the /proc/locks fallback', async () => {
    const d = tmp();
    const h = await hold([{ op: 'open', name: 'o', path: `${d}/f` }, { op: 'ofd', fd: 'o', type: 'w', start: 5n, len: 5n }]);
    const out = path.join(tmp(), 'c');
    const r = runCli(['dump', '--pid', String(pidOf(h)), '--out', out, '--json'], { env: { LOCKMIG_FORCE_PROC_LOCKS: '1' } });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: 'proc-locks', locks: 1 });
    expect(readCheckpoint(out).locks).toEqual([{ kind: 'OFD', type: 'WRITE', start: 5n, end: 9n, pid: pidOf(h), fd: fdOf(h, 'o'), fileId: 1 }]);
  });

  it('fails clearly for a missing pid and bad options', () => {
    const out = path.join(tmp(), 'x');
    const r = runCli(['dump', '--pid', '4206649', '--out', out]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('process 4206649 does not exist');
    expect(runCli(['dump', '--pid', '1', '--out', out, '--method', 'magic']).status).toBe(2);
    expect(runCli(['dump', '--out', out]).status).toBe(2);
  });
});

describe.skipIf(skip)('process trees', () => {
  it('finds the same descendants through task/*/children and through the /proc/*/stat scan', async () => {
    const { descendants } = await import('../../src/proc/index.js');
    const h = await hold([
      { op: 'fork', role: 'a', actions: [{ op: 'fork', role: 'a1', actions: [] }] },
      { op: 'fork', role: 'b', actions: [] },
    ]);
    const want = ['a', 'b', 'a1'].map((r) => pidOf(h, r)).sort((x, y) => x - y);
    expect([...descendants(pidOf(h))].sort((x, y) => x - y)).toEqual(want);
    expect([...descendants(pidOf(h), { scan: true })].sort((x, y) => x - y)).toEqual(want);
  });
});
