/**
 * /proc/<pid>/status (the fields lockmig needs) and /proc/<pid>/stat (for ppid scans).
 *
 *   Name:	python3
 *   Tgid:	2163
 *   PPid:	2150
 *   NSpid:	2163	1
 *
 *   2163 (python3) S 2150 2163 2150 0 -1 …      (/proc/<pid>/stat; comm may hold spaces and ')')
 */
import { readFileSync } from 'node:fs';
import { ProcParseError } from './errors.js';

export interface ProcStatus {
  readonly name: string;
  readonly tgid: number;
  readonly ppid: number;
  /** pid in each pid namespace, outermost (the reader's) first */
  readonly nsPids: readonly number[];
}

export function parseStatus(text: string, source: string): ProcStatus {
  let name: string | null = null;
  let tgid: number | null = null;
  let ppid: number | null = null;
  let nsPids: number[] | null = null;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    const tab = line.indexOf(':');
    if (tab < 0) { if (line !== '') throw new ProcParseError(source, n + 1, line, 'expected "Key:\\tvalue"'); continue; }
    const key = line.slice(0, tab);
    const val = line.slice(tab + 1).replace(/^[ \t]+/, '');
    const num = (): number => {
      if (!/^\d+$/.test(val)) throw new ProcParseError(source, n + 1, line, `bad ${key}`);
      return parseInt(val, 10);
    };
    if (key === 'Name') name = val;
    else if (key === 'Tgid') tgid = num();
    else if (key === 'PPid') ppid = num();
    else if (key === 'NSpid') {
      const parts = val.split(/\s+/).filter((s) => s !== '');
      if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) throw new ProcParseError(source, n + 1, line, 'bad NSpid');
      nsPids = parts.map((p) => parseInt(p, 10));
    }
  }
  if (name === null || tgid === null || ppid === null) {
    throw new ProcParseError(source, 1, lines[0] ?? '', 'missing Name:, Tgid: or PPid:');
  }
  return { name, tgid, ppid, nsPids: nsPids ?? [tgid] };
}

export function readStatus(pid: number): ProcStatus {
  const p = `/proc/${pid}/status`;
  return parseStatus(readFileSync(p, 'utf8'), p);
}

/** ppid from a /proc/<pid>/stat line. */
export function parseStatPpid(text: string, source: string): number {
  const close = text.lastIndexOf(')');
  const rest = close >= 0 ? text.slice(close + 2).split(' ') : [];
  if (close < 0 || rest.length < 2 || !/^\d+$/.test(rest[1]!)) {
    throw new ProcParseError(source, 1, text.split('\n')[0] ?? '', 'malformed stat line');
  }
  return parseInt(rest[1]!, 10);
}

/**
 * The process's cgroup path for identity checks: the cgroup2 entry (`0::/path`) if there is
 * one, else the v1 `name=systemd` hierarchy, else ''.
 */
export function parseCgroupPath(text: string): string {
  let v1 = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('0::')) return line.slice(3);
    const m = /^\d+:name=systemd:(.*)$/.exec(line);
    if (m) v1 = m[1]!;
  }
  return v1;
}

/**
 * A process's identity and liveness from /proc/<pid>/stat: its state letter and its start time
 * (clock ticks since boot; with the pid, it tells a process from a later one that reuses the pid).
 * undefined when the process does not exist. `exited`: it is exiting (PF_EXITING), a zombie (Z) or
 * dead (X): its fd table is going or gone.
 */
export function readStatIdentity(pid: number, procRoot = '/proc'): { readonly state: string; readonly startTime: string; readonly exited: boolean } | undefined {
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/stat`, 'utf8');
  } catch (err) {
    const c = (err as NodeJS.ErrnoException).code;
    if (c === 'ENOENT' || c === 'ESRCH') return undefined;
    throw err;
  }
  return parseStatIdentity(text, `${procRoot}/${pid}/stat`);
}

/** include/linux/sched.h */
const PF_EXITING = 0x00000004;

export function parseStatIdentity(text: string, source: string): { readonly state: string; readonly startTime: string; readonly exited: boolean } {
  const close = text.lastIndexOf(')');
  const rest = close >= 0 ? text.slice(close + 2).trim().split(' ') : [];
  // after "(comm) ": state is field 3 of stat(5), starttime field 22
  if (close < 0 || rest.length < 20 || !/^[A-Za-z]$/.test(rest[0]!) || !/^\d+$/.test(rest[19]!)) {
    throw new ProcParseError(source, 1, text.split('\n')[0] ?? '', 'malformed stat line');
  }
  const state = rest[0]!;
  // flags (field 9): PF_EXITING is set as the task starts exiting, before it closes its files and
  // long before it is a zombie — a dump that overlapped that moment read a half-closed fd table
  const flags = Number(rest[6]);
  const exiting = Number.isFinite(flags) && (flags & PF_EXITING) !== 0;
  return { state, startTime: rest[19]!, exited: exiting || state === 'Z' || state === 'X' || state === 'x' };
}
