/**
 * The restore-shim bundle runs where nothing else exists. This test builds the bundle with the
 * real build script, then runs
 *
 *     <shimCommand('/lockmig/shim')> --image /lockmig/images -- /bin/sh -c '…'
 *
 * inside a chroot that holds ONLY Debian's static busybox, the node's shim directory (the bundle
 * installed by installShimBundle as the agent does, bind-mounted read-only like the webhook's
 * hostPath volume, and started through its `current` link), the checkpoint images (read-only) and the data directory
 * (bind-mounted at the same path it has on the host, as a pod volume keeps its mountPath), with
 * /proc mounted as every container has it. The checkpoint comes from `lockmig dump` of a real
 * python3 process holding a POSIX, a flock and an OFD lock. After the holder exits, the process
 * in the chroot must hold all three: seen in /proc/locks and fdinfo, and refused to independent
 * contenders (flock(1), python3 fcntl).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, REPO_ROOT, missing, runCli } from '../helpers/env.js';
import { SHIM_LAYOUT, shimCommand, shimNodeCommand } from '../../src/bundle/command.js';
import { CURRENT_LINK, installShimBundle } from '../../src/bundle/install.js';

const SKIP = missing({ root: true, tools: ['busybox', 'unshare', 'chroot', 'flock', 'python3', 'mount'] }, 'shim bundle in a busybox-only chroot');
/** Debian's busybox-static: one statically linked binary, so the chroot needs no libc at all. */
function staticBusybox(): string {
  const where = spawnSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).stdout.trim() || '/bin/busybox';
  const ldd = spawnSync('ldd', [where], { encoding: 'utf8' });
  if (ldd.status === 0 && /=>/.test(ldd.stdout)) {
    throw new Error(`${where} is dynamically linked: install Debian's busybox-static (apt-get install busybox-static), the chroot must hold no libc`);
  }
  return where;
}
const SHIM_IN_CHROOT = '/lockmig/shim';
/** Debian's python3 when present (a version-manager shim in front of it can take seconds per start). */
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const IMAGES_IN_CHROOT = '/lockmig/images';

/** Holds a POSIX write lock (bytes 0-99), a flock and an OFD write lock (bytes 10-29); prints READY; exits on stdin EOF. */
const HOLDER = `
import fcntl, os, struct, sys
d = sys.argv[1]
p = os.open(os.path.join(d, 'posix.db'), os.O_RDWR)
fcntl.lockf(p, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
f = os.open(os.path.join(d, 'flock.lock'), os.O_RDWR)
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
o = os.open(os.path.join(d, 'ofd.lock'), os.O_RDWR)
fcntl.fcntl(o, fcntl.F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 10, 20, 0))
print('READY', flush=True)
sys.stdin.read()
`;

/**
 * Independent contenders: a POSIX lock on byte 50 of posix.db and an OFD lock on byte 15 of
 * ofd.lock, each tried without waiting (and released at exit). Prints "posix=<busy|free> ofd=<busy|free>".
 */
const CONTENDER = `
import errno, fcntl, os, struct, sys
def attempt(kind, path):
    fd = os.open(path, os.O_RDWR)
    try:
        if kind == 'posix':
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 50)
        else:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 15, 1, 0))
        return 'free'
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES): raise
        return 'busy'
    finally:
        os.close(fd)
print('posix=%s ofd=%s' % (attempt('posix', sys.argv[1]), attempt('ofd', sys.argv[2])))
`;

function contenders(data: string): string {
  const r = spawnSync(PYTHON, ['-c', CONTENDER, path.join(data, 'posix.db'), path.join(data, 'ofd.lock')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`contender failed: ${r.stderr}`);
  return r.stdout.trim();
}

function flockFree(file: string): boolean {
  const r = spawnSync('flock', ['-n', '-x', file, 'true'], { encoding: 'utf8' });
  return r.status === 0;
}

function inode(file: string): bigint {
  return fs.statSync(file, { bigint: true }).ino;
}

/** /proc/locks lines for an inode: [kind, type, pid]. */
function procLocksFor(ino: bigint): Array<{ kind: string; type: string; pid: number; range: string }> {
  const out: Array<{ kind: string; type: string; pid: number; range: string }> = [];
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    if (line.includes('->')) continue;
    const m = /^\d+:\s+(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\S+)\s+(\S+)/.exec(line);
    if (m && BigInt(m[4]!) === ino) out.push({ kind: m[1]!, type: m[2]!, pid: Number(m[3]), range: `${m[5]} ${m[6]}` });
  }
  return out;
}

async function readLine(child: ChildProcessWithoutNullStreams, pattern: RegExp, what: string, timeoutMs = 20_000): Promise<RegExpExecArray> {
  let buf = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stdout: ${buf} stderr: ${err}`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const m = pattern.exec(buf);
      if (m) { clearTimeout(timer); child.stdout.off('data', onData); resolve(m); }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${what}: process exited (${code}) first; stdout: ${buf} stderr: ${err}`)); });
  });
}

describe.skipIf(SKIP)('shim bundle in a busybox-only chroot', () => {
  /** Runs the bundle's probe in the chroot (no /proc, no /dev) with the given environment. */
  function runProbe(env: Record<string, string>): { ok: boolean; pid: number; koffiPid: number; arch: string } {
    const script = [
      'set -e',
      `mount --bind '${bundle}' '${chroot}${SHIM_IN_CHROOT}'`,
      `exec chroot '${chroot}' ${[...shimNodeCommand(SHIM_IN_CHROOT), path.posix.join(SHIM_IN_CHROOT, SHIM_LAYOUT.probe)].map((a) => `'${a}'`).join(' ')}`,
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
      encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    });
    expect(r.status, r.stderr).toBe(0);
    return JSON.parse(r.stdout.trim()) as { ok: boolean; pid: number; koffiPid: number; arch: string };
  }

  let base: string;
  let bundle: string;
  let chroot: string;
  let data: string;
  let images: string;
  let buildLog = '';
  let shim: ChildProcessWithoutNullStreams | undefined;

  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-shim-'));
    bundle = path.join(base, 'bundle');
    const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'dist/src/bundle/build.js'), '--out', bundle], { encoding: 'utf8', cwd: REPO_ROOT });
    buildLog = r.stderr;
    if (r.status !== 0) throw new Error(`bundle build failed (${r.status}): ${r.stderr}${r.stdout}`);
    process.stderr.write(`[shim bundle] ${buildLog.trim().split('\n').pop()}\n`);

    data = path.join(base, 'data');
    fs.mkdirSync(data);
    for (const f of ['posix.db', 'flock.lock', 'ofd.lock']) fs.writeFileSync(path.join(data, f), Buffer.alloc(4096));
    images = path.join(base, 'images');

    // The chroot: busybox, and empty mount points. Nothing else.
    chroot = path.join(base, 'root');
    fs.mkdirSync(path.join(chroot, 'bin'), { recursive: true });
    fs.copyFileSync(staticBusybox(), path.join(chroot, 'bin/busybox'));
    fs.chmodSync(path.join(chroot, 'bin/busybox'), 0o755);
    fs.symlinkSync('busybox', path.join(chroot, 'bin/sh'));
    for (const d of ['proc', SHIM_IN_CHROOT.slice(1), IMAGES_IN_CHROOT.slice(1), data.slice(1)]) fs.mkdirSync(path.join(chroot, d), { recursive: true });
  }, 120_000);

  afterAll(() => {
    if (shim && shim.exitCode === null) shim.kill('SIGKILL');
    if (base) fs.rmSync(base, { recursive: true, force: true });
  });

  it('builds a bundle with the loader, node, libraries and only the restore graph', () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(bundle, SHIM_LAYOUT.manifest), 'utf8')) as { files: Array<{ path: string; size: number }>; totalBytes: number; command: string[] };
    const files = manifest.files.map((f) => f.path);
    for (const p of [SHIM_LAYOUT.loader, SHIM_LAYOUT.node, SHIM_LAYOUT.cli, 'app/dist/src/cli/commands/restore.js', 'lib/libc.so.6', 'app/package.json']) expect(files, p).toContain(p);
    expect(files.filter((f) => f.endsWith('.node'))).toEqual([`app/node_modules/@koromix/koffi-linux-${process.arch}/linux_${process.arch}/koffi.node`]);
    // the shim must not carry (or load) the Kubernetes client or other subcommands
    expect(files.some((f) => f.includes('@kubernetes/client-node'))).toBe(false);
    expect(files.some((f) => f.startsWith('app/dist/src/cli/commands/') && !/\/(index|restore)\.js$/.test(f))).toBe(false);
    expect(files.some((f) => /\.(ts|map|md)$/.test(f) && !/\.d\.ts$/.test(f) && !/license/i.test(f))).toBe(false);
    expect(manifest.command.slice(0, 4)).toEqual(['$SHIM/lib/ld.so', '--inhibit-cache', '--library-path', '$SHIM/lib']);
    const mib = manifest.totalBytes / 1048576;
    process.stderr.write(`[shim bundle] ${mib.toFixed(1)} MiB, ${files.length} files (node ${(manifest.files.find((f) => f.path === SHIM_LAYOUT.node)!.size / 1048576).toFixed(1)} MiB)\n`);
    expect(mib).toBeLessThan(160);
  });

  it('restores POSIX, flock and OFD locks inside the chroot and execs busybox sh holding them', async () => {
    // 1. a real holder, dumped by `lockmig dump`
    const holder = spawn(PYTHON, ['-c', HOLDER, data], { stdio: ['pipe', 'pipe', 'pipe'] });
    await readLine(holder, /READY/, 'holder ready');
    const dump = runCli(['dump', '--pid', String(holder.pid), '--out', images]);
    expect(dump.status, `dump: ${dump.stderr}`).toBe(0);
    expect(contenders(data)).toBe('posix=busy ofd=busy');
    expect(flockFree(path.join(data, 'flock.lock'))).toBe(false);
    holder.stdin.end();
    await once(holder, 'exit');
    expect(flockFree(path.join(data, 'flock.lock'))).toBe(true);
    expect(contenders(data)).toBe('posix=free ofd=free');

    // 2. the shim, as the webhook starts it, in a chroot with nothing but busybox
    const nodeShimDir = path.join(base, 'node-shim');
    installShimBundle(bundle, nodeShimDir);
    const argv = [
      ...shimCommand(`${SHIM_IN_CHROOT}/${CURRENT_LINK}`), '--image', IMAGES_IN_CHROOT, '--timeout', '5', '--',
      '/bin/sh', '-c', 'echo "READY $$ fds=[$LOCKMIG_FDS] ldpath=[${LD_LIBRARY_PATH:-none}]"; read line; echo bye',
    ];
    const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    const script = [
      'set -e',
      `mount --bind ${q(nodeShimDir)} ${q(chroot + SHIM_IN_CHROOT)}`,
      `mount -o remount,bind,ro ${q(chroot + SHIM_IN_CHROOT)}`,
      `mount --bind ${q(images)} ${q(chroot + IMAGES_IN_CHROOT)}`,
      `mount --bind ${q(data)} ${q(chroot + data)}`,
      `mount -t proc proc ${q(chroot + '/proc')}`,
      `exec chroot ${q(chroot)} ${argv.map(q).join(' ')}`,
    ].join('\n');
    // a private mount namespace: every mount above disappears with the process
    shim = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
      stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LOCKMIG_LOG_LEVEL: 'warn' },
    });
    const m = await readLine(shim, /READY (\d+) fds=\[([^\]]*)\] ldpath=\[([^\]]*)\]/, 'restored command');
    const pid = Number(m[1]);
    expect(pid).toBe(shim.pid); // unshare, sh, chroot, loader, node and the shim all exec'd into one process

    // 3. the process really is busybox inside the chroot
    expect(fs.readlinkSync(`/proc/${pid}/root`)).toBe(chroot);
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe(path.join(chroot, 'bin/busybox'));
    expect(m[3]).toBe('none'); // the loader's --library-path does not leak into the application
    // the application inherits stdio and the restored descriptors, nothing of Node's
    const inherited = new Set(m[2]!.split(';').filter(Boolean).map((e) => Number(e.split(':')[0])));
    expect(inherited.size).toBe(3);
    // baseline: what any child of this test inherits anyway (stdio, plus whatever non-CLOEXEC fds
    // the test runner itself was started with)
    const baseline = spawnSync('sh', ['-c', 'ls /proc/$$/fd'], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] }).stdout.split(/\s+/).filter(Boolean).map(Number);
    const open = fs.readdirSync(`/proc/${pid}/fd`).map(Number).sort((a, b) => a - b);
    expect(open).toEqual([...new Set([...baseline, ...inherited])].sort((a, b) => a - b));

    // 4. the kernel agrees: the locks belong to that process
    const posix = procLocksFor(inode(path.join(data, 'posix.db')));
    expect(posix).toEqual([{ kind: 'POSIX', type: 'WRITE', pid, range: '0 99' }]);
    const fl = procLocksFor(inode(path.join(data, 'flock.lock')));
    expect(fl.map((l) => [l.kind, l.type])).toEqual([['FLOCK', 'WRITE']]);
    const ofd = procLocksFor(inode(path.join(data, 'ofd.lock')));
    expect(ofd).toEqual([{ kind: 'OFDLCK', type: 'WRITE', pid: -1, range: '10 29' }]);
    // OFD locks show pid -1 in /proc/locks: fdinfo tells which process holds the description
    const fdinfoLocks = fs.readdirSync(`/proc/${pid}/fdinfo`)
      .map((fd) => fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))
      .filter((t) => /^lock:/m.test(t)).join('\n');
    expect(fdinfoLocks).toMatch(new RegExp(`OFDLCK\\s+ADVISORY\\s+WRITE -1 \\S+:${inode(path.join(data, 'ofd.lock'))} 10 29`));
    expect(fdinfoLocks).toMatch(new RegExp(`FLOCK\\s+ADVISORY\\s+WRITE ${pid} \\S+:${inode(path.join(data, 'flock.lock'))} 0 EOF`));

    // 5. independent contenders are refused
    expect(flockFree(path.join(data, 'flock.lock'))).toBe(false);
    expect(contenders(data)).toBe('posix=busy ofd=busy');

    // 6. when the application exits, the locks go with it
    shim.stdin.end('done\n');
    const [code] = (await once(shim, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(flockFree(path.join(data, 'flock.lock'))).toBe(true);
    expect(contenders(data)).toBe('posix=free ofd=free');
  });

  it('the bundled runtime starts in the chroot even without /proc (probe: koffi + one syscall)', () => {
    // no /proc, no /dev: the loader, node, koffi and libc.so.6 all come from the bundle
    const out = runProbe({});
    expect(out.ok).toBe(true);
    expect(out.koffiPid).toBe(out.pid);
    expect(out.arch).toBe(process.arch);
  });

  it('ignores the image\'s own loader, libraries, ld.so.cache and LD_LIBRARY_PATH', () => {
    // an image whose glibc pieces are broken or foreign (think alpine, or an old glibc): the
    // bundle must not touch them. Garbage at every path a normal start would use:
    const junk = ['lib64/ld-linux-x86-64.so.2', 'lib/ld-linux-aarch64.so.1', 'lib/x86_64-linux-gnu/libc.so.6',
      'lib/x86_64-linux-gnu/libstdc++.so.6', 'lib/aarch64-linux-gnu/libc.so.6', 'usr/lib/libstdc++.so.6', 'etc/ld.so.cache', 'lib/ld-musl-x86_64.so.1'];
    for (const j of junk) {
      fs.mkdirSync(path.dirname(path.join(chroot, j)), { recursive: true });
      fs.writeFileSync(path.join(chroot, j), 'not an ELF file\n');
    }
    try {
      const out = runProbe({ LD_LIBRARY_PATH: '/lib/x86_64-linux-gnu:/usr/lib:/lib' });
      expect(out.ok).toBe(true);
    } finally {
      for (const j of junk) fs.rmSync(path.join(chroot, j), { force: true });
    }
  });

  it('carries the compiled CLI byte for byte', () => {
    expect(fs.existsSync(CLI)).toBe(true);
    expect(fs.readFileSync(path.join(bundle, SHIM_LAYOUT.cli)).equals(fs.readFileSync(CLI))).toBe(true);
  });
});
