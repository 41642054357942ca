/**
 * Test workload for the dump tests: a python3 process (and forked children) that opens
 * files and takes locks as a JSON script says, prints one JSON line per process when ready
 * ({"role", "pid", "fds"}), then waits to be killed. Children die with their parent
 * (PR_SET_PDEATHSIG). 64-bit offsets travel as decimal strings.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

export type HolderAction =
  | { op: 'open'; name: string; path: string; mode?: 'rw' | 'ro'; cloexec?: boolean; /** raw bytes of the path, hex (overrides path) */ pathHex?: string }
  | { op: 'ofd' | 'posix'; fd: string; type: 'r' | 'w'; start?: bigint; len?: bigint }
  | { op: 'flock'; fd: string; type: 'r' | 'w' }
  | { op: 'lease'; fd: string; type: 'r' | 'w' }
  | { op: 'dup'; fd: string; as: string; to?: number }
  | { op: 'seek'; fd: string; pos: bigint }
  | { op: 'unlink'; path: string }
  | { op: 'close'; fd: string }
  | { op: 'socket'; name: string }
  | { op: 'memfd'; name: string }
  | { op: 'fork'; role: string; actions: HolderAction[] };

export interface HolderProc { readonly role: string; readonly pid: number; readonly fds: Readonly<Record<string, number>> }

export interface Holder {
  readonly child: ChildProcess;
  /** by role; the first process is 'root' */
  readonly procs: ReadonlyMap<string, HolderProc>;
  kill(): void;
}

const SCRIPT = String.raw`
import os, sys, json, fcntl, struct, time, ctypes, socket, signal
libc = ctypes.CDLL(None, use_errno=True)
T = {'r': fcntl.F_RDLCK, 'w': fcntl.F_WRLCK}
fds = {}
def lk(fd, cmd, a):
    fcntl.fcntl(fd, cmd, struct.pack('hhqqi', T[a['type']], 0, int(a.get('start', '0')), int(a.get('len', '0')), 0))
def report(role):
    # one write(2) per line: parent and children share the pipe (and PYTHONUNBUFFERED may be set)
    os.write(1, (json.dumps({'role': role, 'pid': os.getpid(), 'fds': fds}) + '\n').encode())
def idle():
    while True:
        signal.pause()
def run(actions):
    for a in actions:
        op = a['op']
        if op == 'open':
            fl = (os.O_RDWR if a.get('mode', 'rw') == 'rw' else os.O_RDONLY) | os.O_CREAT
            fd = os.open(bytes.fromhex(a['pathHex']) if 'pathHex' in a else a['path'], fl, 0o644)
            os.set_inheritable(fd, not a.get('cloexec', False))
            fds[a['name']] = fd
        elif op == 'ofd': lk(fds[a['fd']], 37, a)
        elif op == 'posix': lk(fds[a['fd']], fcntl.F_SETLK, a)
        elif op == 'flock': fcntl.flock(fds[a['fd']], (fcntl.LOCK_EX if a['type'] == 'w' else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        elif op == 'lease': fcntl.fcntl(fds[a['fd']], fcntl.F_SETLEASE, T[a['type']])
        elif op == 'dup':
            fds[a['as']] = os.dup2(fds[a['fd']], a['to']) if 'to' in a else os.dup(fds[a['fd']])
            os.set_inheritable(fds[a['as']], True)
        elif op == 'seek': os.lseek(fds[a['fd']], int(a['pos']), 0)
        elif op == 'unlink': os.unlink(a['path'])
        elif op == 'close': os.close(fds.pop(a['fd']))
        elif op == 'socket': fds[a['name']] = socket.socket().detach()
        elif op == 'memfd': fds[a['name']] = os.memfd_create('lockmigtest')
        elif op == 'fork':
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                libc.prctl(1, 9)
                run(a['actions'])
                report(a['role'])
                idle()
run(json.loads(sys.argv[1]))
report('root')
idle()
`;

export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

function countProcs(actions: readonly HolderAction[]): number {
  return actions.reduce((n, a) => n + (a.op === 'fork' ? countProcs(a.actions) + 1 : 0), 0);
}

/**
 * Start a holder. `wrap` prefixes the command (e.g. unshare …). Resolves once every process
 * has reported, or rejects with the holder's stderr.
 */
export async function startHolder(actions: HolderAction[], opts: { wrap?: readonly string[] } = {}): Promise<Holder> {
  const json = JSON.stringify(actions, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  const argv = [...(opts.wrap ?? []), PYTHON, '-c', SCRIPT, json];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const procs = new Map<string, HolderProc>();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const want = countProcs(actions) + 1;
  const rl = createInterface({ input: child.stdout! });
  const kill = () => {
    for (const p of procs.values()) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
    child.kill('SIGKILL');
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { kill(); reject(new Error(`holder not ready after 20 s: ${stderr}`)); }, 20_000);
    rl.on('line', (line) => {
      let p: HolderProc;
      try { p = JSON.parse(line) as HolderProc; } catch { kill(); reject(new Error(`holder printed a bad line: ${JSON.stringify(line)}`)); return; }
      procs.set(p.role, p);
      if (procs.size === want) { clearTimeout(timer); resolve(); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`holder exited (${code}) before ready: ${stderr}`)); });
  });
  child.removeAllListeners('exit');
  return { child, procs, kill };
}
