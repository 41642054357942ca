/**
 * The restore shim's state file (`lockmig restore --state-file PATH`).
 *
 * In a restore pod the webhook gives every wrapped container `--state-file
 * /lockmig/state/<container>.json` on a pod-scoped emptyDir volume. The shim writes it, atomically,
 * just before it execs the application:
 *  - `state: held`: every lock was taken (or received by handover); what, when (wall clock and
 *    CLOCK_MONOTONIC with the kernel's boot id) and by which process. The agent on the pod's node
 *    reads it to report the restore in the cluster (pod readiness gate, LockCheckpoint
 *    status.restore, the lock-free window).
 *  - `state: failed`: the last attempt's error; the kubelet restarts the container and the shim
 *    tries again.
 * A container restart after `held` finds the file and starts the application directly: the
 * restored locks belonged to the previous process and went with it, the application takes its
 * own locks as after any restart, and the checkpoint (whose images may be gone by then) is never
 * read again. So a restart never turns into a crash loop.
 */
import fs from 'node:fs';
import path from 'node:path';

export const STATE_FILE_VERSION = 1;
/** Upper bound for reading a state file (it lists restored fd numbers: ~10 bytes per fd). */
export const MAX_STATE_FILE_BYTES = 1 << 20;

export interface StateLockCounts {
  readonly posix: number;
  readonly flock: number;
  readonly ofd: number;
  readonly lease: number;
  readonly total: number;
}

export interface RestoreStateFile {
  readonly v: typeof STATE_FILE_VERSION;
  readonly state: 'held' | 'failed';
  /** wall clock, RFC 3339 with milliseconds */
  readonly time: string;
  readonly bootID?: string;
  /** CLOCK_MONOTONIC (ns) when every lock was held, or when the attempt failed */
  readonly monotonicNs: string;
  /** the shim's (and so the application's) pid in its own pid namespace */
  readonly pid: number;
  /** its start time in clock ticks after boot (field 22 of /proc/self/stat): tells a restarted container apart */
  readonly startTicks?: string;
  readonly image: string;
  readonly checkpoint?: string;
  readonly mode: 'handover' | 'retake';
  readonly locks: StateLockCounts;
  /** locks received with their open file description from the vault (never free) */
  readonly handedOver: number;
  readonly notRestored: number;
  /** restored fd numbers that carry a lock */
  readonly fds: readonly number[];
  readonly error?: { readonly name: string; readonly message: string; readonly exitCode: number };
}

export class StateFileError extends Error {
  constructor(readonly file: string, message: string, options?: { cause?: unknown }) {
    super(`${file}: ${message}`, options);
    this.name = 'StateFileError';
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Validates parsed JSON as a state file; throws StateFileError naming the first bad field. */
export function parseRestoreState(raw: unknown, file = 'state file'): RestoreStateFile {
  const bad = (field: string, why: string): never => { throw new StateFileError(file, `${field} ${why}`); };
  if (!isObj(raw)) return bad('(root)', 'must be a JSON object');
  if (raw.v !== STATE_FILE_VERSION) bad('v', `must be ${STATE_FILE_VERSION}, got ${JSON.stringify(raw.v)}`);
  if (raw.state !== 'held' && raw.state !== 'failed') bad('state', 'must be "held" or "failed"');
  if (typeof raw.time !== 'string' || Number.isNaN(Date.parse(raw.time))) bad('time', 'must be an RFC 3339 time');
  if (typeof raw.monotonicNs !== 'string' || !/^\d{1,20}$/.test(raw.monotonicNs)) bad('monotonicNs', 'must be a decimal string');
  if (raw.bootID !== undefined && (typeof raw.bootID !== 'string' || raw.bootID.length > 64)) bad('bootID', 'must be a short string');
  if (raw.startTicks !== undefined && (typeof raw.startTicks !== 'string' || !/^\d{1,20}$/.test(raw.startTicks))) bad('startTicks', 'must be a decimal string');
  if (!isCount(raw.pid) || raw.pid < 1) bad('pid', 'must be a process id');
  if (typeof raw.image !== 'string') bad('image', 'must be a string');
  if (raw.checkpoint !== undefined && typeof raw.checkpoint !== 'string') bad('checkpoint', 'must be a string');
  if (raw.mode !== 'handover' && raw.mode !== 'retake') bad('mode', 'must be "handover" or "retake"');
  const l = raw.locks;
  if (!isObj(l)) return bad('locks', 'must be an object');
  for (const k of ['posix', 'flock', 'ofd', 'lease', 'total']) if (!isCount(l[k])) bad(`locks.${k}`, 'must be a count');
  for (const k of ['handedOver', 'notRestored']) if (!isCount(raw[k])) bad(k, 'must be a count');
  if (!Array.isArray(raw.fds) || raw.fds.some((x) => !isCount(x))) bad('fds', 'must be a list of fd numbers');
  if (raw.error !== undefined) {
    const e = raw.error;
    if (!isObj(e) || typeof e.name !== 'string' || typeof e.message !== 'string' || !isCount(e.exitCode)) bad('error', 'must be {name, message, exitCode}');
  }
  return raw as unknown as RestoreStateFile;
}

/** Reads a state file; undefined when it does not exist. Throws StateFileError when it is unreadable or malformed. */
export function readRestoreState(file: string): RestoreStateFile | undefined {
  let text: string;
  try {
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (!st) return undefined;
    if (!st.isFile()) throw new StateFileError(file, 'is not a regular file');
    if (st.size > MAX_STATE_FILE_BYTES) throw new StateFileError(file, `is ${st.size} bytes, more than ${MAX_STATE_FILE_BYTES}`);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof StateFileError) throw err;
    throw new StateFileError(file, `cannot be read: ${(err as Error).message}`, { cause: err });
  }
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (err) { throw new StateFileError(file, `is not JSON: ${(err as Error).message}`, { cause: err }); }
  return parseRestoreState(raw, file);
}

/** Writes the state file atomically: a temp file in the same directory, fsync, rename, fsync of the directory. */
export function writeRestoreState(file: string, state: RestoreStateFile): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w', 0o644);
  try {
    fs.writeSync(fd, `${JSON.stringify(state)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  try {
    const dfd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* a directory fsync is best effort (some filesystems refuse it) */ }
}

/** This kernel's boot id (tells whether two CLOCK_MONOTONIC readings can be compared). */
export function bootID(): string | undefined {
  try { return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined; } catch { return undefined; }
}

/** Start time of this process in clock ticks since boot (field 22 of /proc/self/stat). */
export function selfStartTicks(statText?: string): string | undefined {
  try {
    const t = statText ?? fs.readFileSync('/proc/self/stat', 'utf8');
    // the command name (field 2) may contain spaces and parentheses: fields restart after the last ')'
    const rest = t.slice(t.lastIndexOf(')') + 2).split(' ');
    const v = rest[22 - 3];
    return v && /^\d+$/.test(v) ? v : undefined;
  } catch { return undefined; }
}

/** Best effort: the failure message where the kubelet shows it (`kubectl describe pod`: Last State … Message). */
export function writeTerminationMessage(message: string, file = process.env.LOCKMIG_TERMINATION_LOG ?? '/dev/termination-log'): void {
  try {
    if (!fs.existsSync(file)) return;
    fs.writeFileSync(file, message.slice(0, 4000));
  } catch { /* not writable: the log line is still there */ }
}
