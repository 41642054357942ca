/**
 * Daemons of a test control plane (etcd, kube-apiserver): started with their output in a log file,
 * stopped by PID, and never left behind:
 *  - `stop()`: SIGTERM, then SIGKILL after a grace period, and the PID file removed;
 *  - the test process exits (normally, or on an uncaught error): an `exit` hook SIGKILLs every daemon
 *    still running and removes its state directory;
 *  - the test process is killed (SIGKILL, or a worker terminated by vitest): a watchdog shell whose
 *    stdin is a pipe from the test process sees EOF, kills every PID named by `<dir>/*.pid` whose
 *    command line mentions `<dir>` (so a recycled PID is never hit), and removes `<dir>`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';

export interface Daemon {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** SIGTERM, wait up to `graceMs`, then SIGKILL; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>;
}

/** Everything this process started and has not stopped yet, for the exit hook. */
const live = new Set<{ daemon: Daemon; child: ChildProcess }>();
const stateDirs = new Set<string>();
const hooks = { installed: false };

function installExitHook(): void {
  if (hooks.installed) return;
  hooks.installed = true;
  process.on('exit', () => {
    for (const d of [...live].reverse()) {
      try {
        d.child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of stateDirs) fs.rmSync(dir, { recursive: true, force: true });
  });
}

/**
 * The watchdog for a state directory: `stdin` is a pipe whose only writer is this process. Its
 * handles are unref'd so it never keeps the test process alive.
 */
export function startWatchdog(dir: string): { cancel(): void } {
  installExitHook();
  stateDirs.add(dir);
  const script = [
    'read _ignored',
    'for f in "$1"/*.pid; do',
    '  [ -f "$f" ] || continue',
    '  p=$(cat "$f" 2>/dev/null) || continue',
    '  [ -n "$p" ] && tr "\\0" " " < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$1" && kill -KILL "$p" 2>/dev/null',
    'done',
    'sleep 0.5',
    'rm -rf -- "$1"',
  ].join('\n');
  const w = spawn('/bin/sh', ['-c', script, 'lockmig-envtest-watchdog', dir], { stdio: ['pipe', 'ignore', 'ignore'] });
  w.unref();
  (w.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  w.on('error', () => undefined);
  return {
    cancel() {
      stateDirs.delete(dir);
      w.kill('SIGKILL');
    },
  };
}

/** Starts `bin args` with stdout+stderr appended to `logFile` and its PID in `pidFile`. */
export function startDaemon(name: string, bin: string, args: readonly string[], o: { logFile: string; pidFile: string; cwd?: string }): Daemon {
  installExitHook();
  const fd = fs.openSync(o.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(bin, args, { stdio: ['ignore', fd, fd], cwd: o.cwd });
  } finally {
    fs.closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`${name}: could not start ${bin}`);
  const pid = child.pid;
  fs.writeFileSync(o.pidFile, `${pid}\n`);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      live.delete(entry);
      fs.rmSync(o.pidFile, { force: true });
      resolve({ code, signal });
    });
  });
  child.on('error', () => undefined);
  const daemon: Daemon = {
    name, pid, logFile: o.logFile, exited,
    running: () => !done,
    async stop(graceMs = 10_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  const entry = { daemon, child };
  live.add(entry);
  return daemon;
}

/** The last `lines` lines of a log file (for error messages). */
export function logTail(file: string, lines = 25): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return `(no log at ${file})`;
  }
}

export const pidFileOf = (dir: string, name: string): string => path.join(dir, `${name}.pid`);
