/**
 * Real CRIU dumps for the interoperability tests: a python3 lock holder, either a plain
 * process in its own session ("host": CRIU dumps no namespace, paths are host paths) or a
 * small container ("container": own pid + mount namespace, pivot_root into a tmpfs root with
 * /usr and /etc bind-mounted, the volume bind-mounted at `mountAt`; the bind mounts are
 * declared external as container runtimes do), and `criu dump --file-locks --leave-running`.
 *
 * CRIU 4.x is needed on this kernel (Debian's 3.17 cannot dump here); ../shared/criu has 4.2.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PYTHON } from '../proc/holder.js';
import { descendants } from './workload.js';

/** The criu binary when it is version 4 or newer, else null. */
export function criu4(): string | null {
  for (const c of ['/usr/local/sbin/criu', 'criu']) {
    const r = spawnSync(c, ['--version'], { encoding: 'utf8' });
    const m = /Version:\s*(\d+)\./.exec(r.stdout ?? '');
    if (r.status === 0 && m && Number(m[1]) >= 4) return c;
  }
  return null;
}

/** One python3 holder; sys.argv[1] = directory of the files, sys.argv[2] = control directory. */
export const CRIU_HOLDER = String.raw`
import os, sys, json, fcntl, struct, signal, sqlite3
d, ctl = sys.argv[1], sys.argv[2]
spec = json.loads(sys.argv[3])
os.closerange(3, 4096)
fds = {}
def ofd(fd, t, start, ln):
    fcntl.fcntl(fd, 37, struct.pack('hhqqi4x', t, 0, start, ln, 0))
def posix(fd, t, start, ln):
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi4x', t, 0, start, ln, 0))
def op(name):
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o644)
    return fd
if spec.get('basic'):
    fds['posix'] = op('posix lock.db'); posix(fds['posix'], fcntl.F_WRLCK, 0, 10)
    fds['flock'] = op('flock file'); fcntl.flock(fds['flock'], fcntl.LOCK_EX | fcntl.LOCK_NB)
    fds['shared'] = op('flock shared'); fcntl.flock(fds['shared'], fcntl.LOCK_SH | fcntl.LOCK_NB)
    fds['ofd'] = op('ofd big'); ofd(fds['ofd'], fcntl.F_WRLCK, 1 << 62, 10); ofd(fds['ofd'], fcntl.F_RDLCK, 0, 100)
    fds['ofddup'] = os.dup2(fds['ofd'], 40)
if spec.get('sqlite'):
    con = sqlite3.connect(os.path.join(d, 'app.db'), isolation_level=None)
    con.execute('BEGIN EXCLUSIVE')
    con.execute("insert into t values ('source')")
if spec.get('memfd'):
    fds['memfd'] = os.memfd_create('locked'); fcntl.flock(fds['memfd'], fcntl.LOCK_EX)
if spec.get('deleted'):
    fds['deleted'] = op('gone'); fcntl.flock(fds['deleted'], fcntl.LOCK_EX); os.unlink(os.path.join(d, 'gone'))
kids = []
if spec.get('fork'):
    # the child takes a POSIX lock through a description it inherited: CRIU's dump drops it
    fds['inherited'] = op('inherited')
    ofd(fds['inherited'], fcntl.F_WRLCK, 0, 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        posix(fds['inherited'], fcntl.F_WRLCK, 100, 10)
        os.write(w, b'x'); os.close(w)
        while True: signal.pause()
    os.close(w); os.read(r, 1); os.close(r)
    kids.append(pid)
tmp = os.path.join(ctl, 'ready.tmp')
with open(tmp, 'w') as f:
    json.dump({'pid': os.getpid(), 'kids': kids, 'fds': fds}, f)
os.rename(tmp, os.path.join(ctl, 'ready'))
while True:
    signal.pause()
`;

export interface HolderSpec {
  readonly basic?: boolean;
  readonly sqlite?: boolean;
  readonly memfd?: boolean;
  readonly deleted?: boolean;
  readonly fork?: boolean;
}

export interface CriuHolder {
  /** host pid of the python3 holder (the process CRIU dumps) */
  readonly pid: number;
  /** what the holder reported: its own pid (in its namespace), its children, its fds */
  readonly report: { pid: number; kids: number[]; fds: Record<string, number> };
  /** external mounts to pass to criu dump (container mode) */
  readonly externals: readonly string[];
  kill(): void;
}

async function waitFor(file: string, child: ChildProcess, stderr: () => string, ms = 20_000): Promise<string> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8');
    if (child.exitCode !== null) throw new Error(`holder exited (${child.exitCode}) before it was ready: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`holder not ready after ${ms} ms: ${stderr()}`);
}

/**
 * Start a holder on `dataDir` (created files live there). `container` runs it in its own pid +
 * mount namespace with `dataDir` bind-mounted at `mountAt`; `ctlDir` receives the ready file.
 */
export async function startCriuHolder(dataDir: string, ctlDir: string, spec: HolderSpec, container?: { mountAt: string; rootfs: string }): Promise<CriuHolder> {
  const json = JSON.stringify(spec);
  let child: ChildProcess;
  let externals: string[] = [];
  if (!container) {
    // stderr to a file: Node's stdio pipes are unix socketpairs, which CRIU refuses as external sockets
    const errFd = fs.openSync(path.join(ctlDir, 'stderr'), 'w');
    child = spawn(PYTHON, ['-c', CRIU_HOLDER, dataDir, ctlDir, json], { detached: true, stdio: ['ignore', 'ignore', errFd] });
    fs.closeSync(errFd);
  } else {
    const R = container.rootfs;
    const at = container.mountAt;
    const setup = [
      'set -e',
      'mount --make-rprivate /',
      `mount -t tmpfs lockmig-rootfs "${R}"`,
      `for d in usr etc; do mkdir -p "${R}/$d"; mount --rbind "/$d" "${R}/$d"; mount --make-rprivate "${R}/$d"; done`,
      `ln -s usr/bin "${R}/bin"; ln -s usr/lib "${R}/lib"; ln -s usr/lib64 "${R}/lib64"; ln -s usr/sbin "${R}/sbin"`,
      `mkdir -p "${R}/proc" "${R}/dev" "${R}/tmp" "${R}/ctl" "${R}${at}" "${R}/.old"`,
      `mount -t proc proc "${R}/proc"`,
      `touch "${R}/dev/null"; mount --bind /dev/null "${R}/dev/null"`,
      `mount --bind "$1" "${R}${at}"`,
      `mount --bind "$2" "${R}/ctl"`,
      `cd "${R}"`,
      'pivot_root . .old',
      'umount -l /.old',
      'rmdir /.old',
      `exec /usr/bin/setsid /usr/bin/python3 -c "$3" "${at}" /ctl "$4" </dev/null >/dev/null 2>/ctl/stderr`,
    ].join('\n');
    child = spawn('unshare', ['--mount', '--pid', '--fork', 'sh', '-c', setup, 'sh', dataDir, ctlDir, CRIU_HOLDER, json], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    // the ctl bind mount is a mount of its own inside the container: external too
    externals = ['/usr:usr', '/etc:etc', '/dev/null:devnull', `${at}:vol`, '/ctl:ctl'];
  }
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const errText = () => stderr + (fs.existsSync(path.join(ctlDir, 'stderr')) ? fs.readFileSync(path.join(ctlDir, 'stderr'), 'utf8') : '');
  const report = JSON.parse(await waitFor(path.join(ctlDir, 'ready'), child, errText)) as CriuHolder['report'];
  let pid = report.pid;
  if (container) {
    const py = descendants(child.pid!).find((p) => { try { return fs.readFileSync(`/proc/${p}/comm`, 'utf8').startsWith('python'); } catch { return false; } });
    if (!py) throw new Error('cannot find the container holder\'s host pid');
    pid = py;
  }
  const all = () => [pid, ...descendants(pid), child.pid!];
  return {
    pid, report, externals,
    kill() { for (const p of all()) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } } },
  };
}

/** `criu dump --file-locks --leave-running --shell-job` of `pid` (and its children) into `dir`. */
export function criuDump(criu: string, pid: number, dir: string, externals: readonly string[] = []): void {
  fs.mkdirSync(dir, { recursive: true });
  const args = ['dump', '-t', String(pid), '-D', dir, '--file-locks', '--leave-running', '--shell-job', '-v4', '-o', 'dump.log'];
  for (const e of externals) { const i = e.lastIndexOf(':'); args.push('--external', `mnt[${e.slice(0, i)}]:${e.slice(i + 1)}`); }
  const r = spawnSync(criu, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) {
    const log = fs.existsSync(path.join(dir, 'dump.log')) ? fs.readFileSync(path.join(dir, 'dump.log'), 'utf8') : '';
    throw new Error(`criu dump failed (${r.status}): ${r.stderr}\n${log.split('\n').filter((l) => /Error|Warn/.test(l)).slice(-15).join('\n')}`);
  }
}

/**
 * Lay out a kubelet/CRI-O checkpoint archive from a real CRIU dump: the images under
 * checkpoint/, spec.dump and config.dump shaped like CRI-O's (internal/lib/checkpoint.go: the
 * OCI spec with CRI-O's annotations; checkpointctl's ContainerConfig), and the other entries a
 * CRI-O archive carries. Returns the directory to tar.
 */
export function kubeletArchiveTree(criuDir: string, out: string, pod: { namespace: string; name: string; uid: string; container: string }): string {
  fs.mkdirSync(path.join(out, 'checkpoint'), { recursive: true });
  for (const n of fs.readdirSync(criuDir)) {
    const src = path.join(criuDir, n);
    if (n === 'dump.log') fs.copyFileSync(src, path.join(out, 'dump.log'));
    else if (n === 'stats-dump') fs.copyFileSync(src, path.join(out, 'stats-dump'));
    else fs.copyFileSync(src, path.join(out, 'checkpoint', n));
  }
  const spec = {
    ociVersion: '1.0.2-dev', hostname: pod.name,
    process: { args: ['/usr/bin/python3'], cwd: '/' },
    root: { path: '/var/lib/containers/storage/overlay/x/merged' },
    mounts: [{ destination: '/data', type: 'bind', source: `/var/lib/kubelet/pods/${pod.uid}/volumes/kubernetes.io~empty-dir/data`, options: ['rw', 'rbind'] }],
    annotations: {
      'io.container.manager': 'cri-o',
      'io.kubernetes.container.name': pod.container,
      'io.kubernetes.pod.name': pod.name,
      'io.kubernetes.pod.namespace': pod.namespace,
      'io.kubernetes.pod.uid': pod.uid,
      'io.kubernetes.cri-o.Metadata': JSON.stringify({ name: pod.container }),
      'io.kubernetes.cri-o.ContainerType': 'container',
    },
  };
  fs.writeFileSync(path.join(out, 'spec.dump'), JSON.stringify(spec, null, 2));
  fs.writeFileSync(path.join(out, 'config.dump'), JSON.stringify({
    id: 'c0ffee'.repeat(10).slice(0, 64), name: `k8s_${pod.container}_${pod.name}_${pod.namespace}_${pod.uid}_0`,
    rootfsImageName: 'docker.io/library/python:3', runtime: 'runc',
    createdTime: '2026-01-01T00:00:00Z', checkpointedTime: '2026-01-01T00:10:00Z', restoredTime: '0001-01-01T00:00:00Z', restored: false,
  }, null, 2));
  fs.writeFileSync(path.join(out, 'bind.mounts'), JSON.stringify([{ source: spec.mounts[0]!.source, destination: '/data', file_type: 'directory', permissions: 0o755 }]));
  // an (empty) root file system diff, as CRI-O adds one
  spawnSync('tar', ['-cf', path.join(out, 'rootfs-diff.tar'), '-T', '/dev/null']);
  return out;
}

/** Like env.ts missing(): a loud SKIPPING banner when CRIU 4.x is absent, and a failure under CI. */
export function missingCriu4(suite: string): boolean {
  if (criu4() !== null) return false;
  const msg = `\n!!!!!!!! SKIPPING "${suite}": needs CRIU 4.x (Debian's 3.17 cannot dump on this kernel; see ../shared/criu/README.md) — these tests did NOT run !!!!!!!!\n`;
  process.stderr.write(msg);
  if (process.env.CI) throw new Error(`CI must provide CRIU 4.x for "${suite}" (.ci/run installs it from ../shared/criu)`);
  return true;
}
