/**
 * What must hold for ANY checkpoint directory, however hostile, pushed through the steps
 * `lockmig restore` takes before it touches a user file:
 *
 *   readCheckpoint(dir)  →  planRestore(ckpt)  →  fd-number limits  →  resolveAll(root, paths, allow)
 *
 * 1. no crash: each step returns, or throws one of its documented error classes (ImageError,
 *    RestorePlanError, RestoreRefused) — anything else (TypeError, RangeError, SyscallError, a
 *    plain Error, a stack overflow) is a defect;
 * 2. every ImageError names a file of the directory, starts its message with it, and carries the
 *    byte offset (image files) or the field (manifest.json) it is about;
 * 3. an accepted checkpoint is whole and consistent (every reference resolves, every number is
 *    in range) and the writer accepts it back unchanged (reader and writer agree on the model);
 * 4. an accepted plan only uses fd numbers this process could really place (3 ≤ fd < RLIMIT_NOFILE);
 * 5. a path the resolver accepts really is (per realpath(3), i.e. the kernel) a symlink-free
 *    regular file or directory under an --allow prefix inside the root, and never a canary;
 * 6. reading changes nothing in the directory.
 * The time bound (no hangs) is enforced by the harness around this function.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { isDeepStrictEqual } from 'node:util';
import { ImageError, readCheckpoint, writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { planRestore, plannedFdNumbers, RestorePlanError, type RestorePlan } from '../../src/engine/restore-plan.js';
import { resolveAll, RestoreRefused, isUnder } from '../../src/engine/paths.js';
import { fastFs } from '../../src/engine/restore-sys.js';
import { renderCheckpoint, checkpointToJson } from '../../src/cli/commands/inspect.js';
import type { CaseFile } from './image-cases.js';
import type { Fixture } from './layout.js';

export type Stage = 'read' | 'plan' | 'resolve' | 'ok';

export interface CaseOutcome {
  /** where the case stopped: the step that refused it, or 'ok' */
  readonly stage: Stage;
  /** error class (and ImageError code / refusal rule) when refused */
  readonly error?: string;
  readonly message?: string;
  /** contract violations: empty for a passing case */
  readonly violations: readonly string[];
  readonly ms: number;
}

/** Exit code `lockmig restore` must give for an outcome (see docs/restore.md). */
export function expectedExit(o: Pick<CaseOutcome, 'stage'>): readonly number[] {
  switch (o.stage) {
    case 'read': return [5];
    case 'plan': return [2];
    case 'resolve': return [4];
    // accepted: the command runs (0), or the real open/lock fails (1 RestoreFailed, 3 LockTimeout:
    // a hostile image may hold two conflicting locks on one file)
    case 'ok': return [0, 1, 3];
  }
}

const CODES = new Set(['TRUNCATED', 'BAD_MAGIC', 'CHECKSUM', 'MISSING', 'VERSION', 'INVALID']);
const RULES = new Set(['nul-byte', 'relative', 'dot-component', 'pseudo-fs', 'outside-allowed', 'symlink-escape', 'symlink-loop', 'not-a-directory', 'file-type', 'missing', 'unreadable']);
const INT64_MAX = (1n << 63n) - 1n;
/**
 * A manifest complaint starts with the field it is about: `processes[0].fdinfoImage …`,
 * `images["x.img"].sha256 …`, `counts …`, `format …`, or says that the JSON itself is broken.
 */
const MANIFEST_FIELD = /^(not valid JSON|format version|larger than|not a regular file|manifest |[a-zA-Z][a-zA-Z0-9]*(\[\d+\]|\["[^"]*"\])?(\.[a-zA-Z][a-zA-Z0-9]*(\[\d+\])?)*( |$))/;

/** Write a case into `dir` (emptied first). */
export function writeCase(dir: string, files: ReadonlyMap<string, CaseFile>): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, v] of files) {
    const p = path.join(dir, name);
    if (Buffer.isBuffer(v)) { fs.writeFileSync(p, v); continue; }
    switch (v.special) {
      case 'dir': fs.mkdirSync(p); break;
      case 'symlink': fs.symlinkSync(v.target, p); break;
      case 'fifo': mkfifo(p); break;
      case 'sparse': { const fd = fs.openSync(p, 'w'); fs.ftruncateSync(fd, v.size); fs.closeSync(fd); break; }
    }
  }
}

function mkfifo(p: string): void {
  // Node has no mkfifo(3): use the coreutils tool
  const r = spawnSync('mkfifo', [p], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mkfifo ${p} failed: ${r.stderr}`);
}

/** lstat-level fingerprint of a directory (no open of FIFOs or devices). */
function snapshot(dir: string): string {
  const h = createHash('sha256');
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    h.update(`${name}|${st.mode}|${st.size}|${st.mtimeMs}|${st.ino}\n`);
    if (st.isFile() && st.size <= 1 << 20) h.update(fs.readFileSync(p));
  }
  return h.digest('hex');
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message.slice(0, 400)}\n${(err.stack ?? '').split('\n').slice(1, 8).join('\n')}`;
  return `non-Error thrown: ${String(err)}`;
}

function checkImageError(e: ImageError, dir: string, files: ReadonlyMap<string, CaseFile>): string[] {
  const v: string[] = [];
  const name = path.relative(dir, e.file);
  if (path.dirname(e.file) !== path.resolve(dir) || name.includes('/')) v.push(`ImageError.file ${JSON.stringify(e.file)} is not a file of the checkpoint directory`);
  if (!e.message.startsWith(e.file)) v.push(`ImageError message does not start with the file: ${JSON.stringify(e.message.slice(0, 200))}`);
  if (!CODES.has(e.code)) v.push(`undocumented ImageError code ${e.code}`);
  const rest = e.message.slice(e.file.length).replace(/^ at offset \d+/, '').replace(/^: /, '');
  if (name.endsWith('.img') && (e.code === 'BAD_MAGIC' || e.code === 'TRUNCATED' || e.code === 'INVALID') && !/^cannot read|^not a regular file|^larger than/.test(rest)) {
    if (e.offset === undefined || !Number.isSafeInteger(e.offset) || e.offset < 0) v.push(`${e.code} in ${name} without a byte offset: ${JSON.stringify(e.message.slice(0, 200))}`);
    const b = files.get(name);
    if (e.offset !== undefined && Buffer.isBuffer(b) && e.offset > b.length) v.push(`offset ${e.offset} beyond the ${b.length}-byte file ${name}`);
  }
  if (name === 'manifest.json' && e.code === 'INVALID' && !MANIFEST_FIELD.test(rest)) v.push(`manifest error without a field: ${JSON.stringify(rest.slice(0, 200))}`);
  return v;
}

function checkModel(c: Checkpoint): string[] {
  const v: string[] = [];
  const bad = (m: string) => { if (v.length < 5) v.push(`accepted checkpoint: ${m}`); };
  const pids = new Set<number>();
  for (const p of c.processes) {
    if (!Number.isSafeInteger(p.pid) || p.pid < 1) bad(`pid ${p.pid}`);
    if (pids.has(p.pid)) bad(`pid ${p.pid} twice`);
    pids.add(p.pid);
  }
  const files = new Map<number, (typeof c.files)[number]>();
  for (const f of c.files) {
    if (!Number.isInteger(f.id) || f.id < 1 || f.id > 0xffffffff) bad(`file id ${f.id}`);
    if (files.has(f.id)) bad(`file id ${f.id} twice`);
    files.set(f.id, f);
    if (typeof f.path !== 'string' || !f.path.startsWith('/')) bad(`file ${f.id} path ${JSON.stringify(f.path)}`);
    if (typeof f.pos !== 'bigint' || f.pos < 0n || f.pos >= 1n << 64n) bad(`file ${f.id} pos ${f.pos}`);
    if (!Number.isInteger(f.flags) || f.flags < 0 || f.flags > 0xffffffff) bad(`file ${f.id} open flags ${f.flags} (not a 32-bit unsigned value)`);
  }
  const fds = new Map<string, number>();
  for (const d of c.fds) {
    if (!Number.isInteger(d.fd) || d.fd < 0 || d.fd > 0x7fffffff) bad(`fd ${d.fd}`);
    if (!pids.has(d.pid)) bad(`fd ${d.fd} of unknown pid ${d.pid}`);
    if (!files.has(d.fileId)) bad(`fd ${d.fd} on unknown file ${d.fileId}`);
    const k = `${d.pid}/${d.fd}`;
    if (fds.has(k)) bad(`fd ${k} twice`);
    fds.set(k, d.fileId);
  }
  for (const l of c.locks) {
    if (fds.get(`${l.pid}/${l.fd}`) !== l.fileId) bad(`${l.kind} lock on ${l.pid}/${l.fd} file ${l.fileId} does not match an fd`);
    if (l.start < 0n || l.start > INT64_MAX) bad(`lock start ${l.start}`);
    if (l.end !== 'EOF' && (l.end < l.start || l.end > INT64_MAX)) bad(`lock end ${l.end}`);
  }
  return v;
}

function checkPlan(plan: RestorePlan, fdLimit: number): string[] {
  const v: string[] = [];
  const nums = plannedFdNumbers(plan);
  if (new Set(nums).size !== nums.length) v.push('plan places two descriptions at one fd number');
  for (const n of nums) {
    if (!Number.isSafeInteger(n) || n < 3) { v.push(`plan uses fd ${n} (stdio or invalid)`); break; }
    if (n >= fdLimit) { v.push(`plan accepted fd ${n}, but RLIMIT_NOFILE is ${fdLimit}: the restore cannot place it`); break; }
  }
  return v;
}

function checkResolved(fx: Fixture, resolved: ReadonlyMap<string, { resolved: string; isDirectory: boolean }>): string[] {
  const v: string[] = [];
  const realRoot = fs.realpathSync.native(fx.root);
  const host = (p: string) => (fx.root === '/' ? p : path.join(fx.root, p));
  for (const [recorded, r] of resolved) {
    const hp = host(r.resolved);
    let real: string;
    try { real = fs.realpathSync.native(hp); } catch (err) { v.push(`accepted ${JSON.stringify(recorded)} → ${hp}, which does not resolve: ${(err as Error).message}`); continue; }
    if (real !== path.resolve(hp)) v.push(`accepted ${JSON.stringify(recorded)} as symlink-free ${hp}, the kernel resolves it to ${real}`);
    if (!isUnder(real, realRoot)) v.push(`accepted ${JSON.stringify(recorded)} resolving outside the root: ${real}`);
    if (!fx.allow.some((a) => isUnder(real, fs.realpathSync.native(host(a))))) v.push(`accepted ${JSON.stringify(recorded)} resolving outside --allow: ${real}`);
    if (path.basename(real).startsWith('canary-')) v.push(`accepted a canary: ${JSON.stringify(recorded)} → ${real}`);
    const st = fs.lstatSync(real);
    if (!st.isFile() && !st.isDirectory()) v.push(`accepted ${JSON.stringify(recorded)}: ${real} is neither a regular file nor a directory`);
    if (st.isDirectory() !== r.isDirectory) v.push(`accepted ${JSON.stringify(recorded)}: isDirectory ${r.isDirectory} but it is ${st.isDirectory() ? 'a directory' : 'not'}`);
  }
  return v;
}

export interface OracleEnv {
  readonly fx: Fixture;
  /** RLIMIT_NOFILE soft limit of this process */
  readonly fdLimit: number;
  /** scratch directory for the writer round trip */
  readonly scratch: string;
  /** the check the restore runs on fd numbers (the product's, once it has one) */
  readonly checkFds?: (plan: RestorePlan) => void;
}

/** Run one case that is already written to `dir`. Never throws. */
export function runCase(dir: string, files: ReadonlyMap<string, CaseFile>, env: OracleEnv): CaseOutcome {
  const t0 = performance.now();
  const violations: string[] = [];
  const done = (stage: Stage, extra: { error?: string; message?: string } = {}): CaseOutcome => {
    try {
      if (snapshot(dir) !== before) violations.push('the checkpoint directory changed while it was read');
    } catch (err) {
      violations.push(`snapshot failed: ${describe(err)}`);
    }
    return { stage, ...extra, violations, ms: performance.now() - t0 };
  };
  const before = snapshot(dir);

  let ckpt: Checkpoint;
  try {
    ckpt = readCheckpoint(dir);
  } catch (err) {
    if (!(err instanceof ImageError)) {
      violations.push(`readCheckpoint crashed: ${describe(err)}`);
      return done('read', { error: err instanceof Error ? err.name : typeof err });
    }
    violations.push(...checkImageError(err, dir, files));
    return done('read', { error: `ImageError/${err.code}`, message: err.message });
  }
  violations.push(...checkModel(ckpt));
  try {
    checkpointToJson(ckpt);
    renderCheckpoint(ckpt);
  } catch (err) {
    violations.push(`inspect rendering crashed: ${describe(err)}`);
  }
  // the writer fsyncs every image: keep the round trip to checkpoints of a sane size
  if (violations.length === 0 && ckpt.processes.length <= 64 && ckpt.fds.length + ckpt.locks.length <= 20_000) {
    try {
      writeCheckpoint(env.scratch, ckpt);
      if (!isDeepStrictEqual(readCheckpoint(env.scratch), ckpt)) violations.push('writer/reader round trip of an accepted checkpoint changed it');
    } catch (err) {
      violations.push(`the writer refuses a checkpoint the reader accepted: ${describe(err)}`);
    }
  }

  let plan: RestorePlan;
  try {
    plan = planRestore(ckpt);
    env.checkFds?.(plan);
  } catch (err) {
    if (!(err instanceof RestorePlanError)) violations.push(`restore planning crashed: ${describe(err)}`);
    return done('plan', { error: err instanceof Error ? err.name : typeof err, message: (err as Error).message });
  }
  violations.push(...checkPlan(plan, env.fdLimit));

  let resolved: ReturnType<typeof resolveAll>;
  try {
    resolved = resolveAll(env.fx.root, plan.files.map((f) => f.file.path), env.fx.allow, fastFs);
  } catch (err) {
    if (!(err instanceof RestoreRefused)) {
      violations.push(`path validation crashed: ${describe(err)}`);
      return done('resolve', { error: err instanceof Error ? err.name : typeof err });
    }
    if (!RULES.has(err.rule)) violations.push(`undocumented refusal rule ${err.rule}`);
    if (!plan.files.some((f) => f.file.path === err.path)) violations.push(`RestoreRefused names a path that is not recorded: ${JSON.stringify(err.path)}`);
    return done('resolve', { error: `RestoreRefused/${err.rule}`, message: err.message });
  }
  violations.push(...checkResolved(env.fx, resolved));
  return done('ok');
}

/** RLIMIT_NOFILE soft limit, from /proc/self/limits. */
export function fdLimitOfThisProcess(): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const n = Number(line?.split(/\s{2,}/)[1]);
  return Number.isSafeInteger(n) ? n : 1024;
}
