/**
 * The image fuzz harness: runs `cases` generated checkpoints through the oracle in child
 * processes and enforces a time bound per case. A child that stays on one case longer than
 * `caseTimeoutMs` is killed (SIGKILL: a read blocked on a FIFO cannot be interrupted from
 * inside), the case is recorded as a hang, and a new child continues with the next index.
 * A child that dies (abort, out of memory, native crash) is recorded the same way. Cases of the
 * "huge" family (tens of thousands of entries, linear work of seconds on a busy machine) get
 * three times the bound.
 *
 * Every failing case is saved as JSON (seed, index, family, what was mutated, the files in
 * base64, what went wrong) in `failuresDir`; `LOCKMIG_FUZZ_SEED=<seed> LOCKMIG_FUZZ_ONLY=<index>`
 * replays it.
 *
 * The children run the TypeScript sources bundled by esbuild into node_modules/.cache (so that
 * koffi and protobufjs resolve from the project's node_modules), not a stale dist/.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { caseToJson, makeCase, modeFor, type Family } from './image-cases.js';
import { createLayout, fixture } from './layout.js';
import type { CaseOutcome, Stage } from './image-oracle.js';
import type { WorkerConfig } from './image-worker.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
/** "huge" cases (tens of thousands of entries) get this many times the per-case bound */
const HUGE_FACTOR = 3;

export interface CaseReport extends CaseOutcome {
  readonly index: number;
  readonly family: Family;
  /** time spent generating and writing the case (not part of the bound's subject, but inside it) */
  readonly genMs?: number;
}

export interface Failure {
  readonly index: number;
  readonly kind: 'violation' | 'hang' | 'died';
  readonly detail: string;
  readonly file: string;
}

export interface FuzzSummary {
  readonly seed: string;
  readonly cases: number;
  readonly completed: number;
  readonly failures: readonly Failure[];
  readonly byFamily: Readonly<Record<string, number>>;
  readonly byStage: Readonly<Record<Stage, number>>;
  readonly byError: Readonly<Record<string, number>>;
  readonly ms: { readonly total: number; readonly oracle: number; readonly generate: number; readonly p50: number; readonly p99: number; readonly max: number; readonly maxIndex: number };
  /** outcome per index (for the CLI sample and the report) */
  readonly outcomes: ReadonlyMap<number, CaseReport>;
}

export interface FuzzOptions {
  readonly seed: string;
  readonly cases: number;
  /** first index (default 0) */
  readonly from?: number;
  /** run only these indices (replay) */
  readonly only?: readonly number[];
  readonly caseTimeoutMs: number;
  readonly workers: number;
  readonly failuresDir: string;
  readonly onProgress?: (done: number, total: number) => void;
  /** write every outcome as a JSON line here (LOCKMIG_FUZZ_REPORT) */
  readonly reportFile?: string;
}

/** A tmpfs for the scratch directories when there is one (tens of thousands of small writes). */
export function scratchBase(): string {
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK);
    return '/dev/shm';
  } catch {
    return os.tmpdir();
  }
}

async function bundleWorker(): Promise<string> {
  const outDir = path.join(REPO, 'node_modules', '.cache', 'lockmig-fuzz');
  fs.mkdirSync(outDir, { recursive: true });
  const outfile = path.join(outDir, `image-worker-${process.pid}.mjs`);
  await build({
    entryPoints: [path.join(REPO, 'test/fuzz/image-worker.ts')], outfile, bundle: true, platform: 'node', format: 'esm',
    target: 'node20', packages: 'external', sourcemap: 'inline', logLevel: 'error',
  });
  return outfile;
}

export async function runImageFuzz(o: FuzzOptions): Promise<FuzzSummary> {
  const work = fs.mkdtempSync(path.join(scratchBase(), 'lockmig-fuzz-'));
  const fixtures = path.join(work, 'fixtures');
  createLayout(path.join(fixtures, 'in-root'), 'in-root');
  createLayout(path.join(fixtures, 'host'), 'host');
  const worker = await bundleWorker();
  const from = o.from ?? 0;
  const all = o.only ? [...o.only] : Array.from({ length: o.cases }, (_, i) => from + i);
  const outcomes = new Map<number, CaseReport>();
  const failures: Failure[] = [];
  fs.mkdirSync(o.failuresDir, { recursive: true });

  const save = (index: number, kind: Failure['kind'], detail: string, outcome?: CaseReport): void => {
    let c: unknown;
    try {
      c = caseToJson(makeCase(o.seed, index, fixture(path.join(fixtures, modeFor(index)), modeFor(index))));
    } catch (err) {
      c = { generatorError: String(err) };
    }
    const file = path.join(o.failuresDir, `images-${o.seed}-${index}.json`);
    fs.writeFileSync(file, `${JSON.stringify({
      replay: `LOCKMIG_FUZZ_SEED=${o.seed} LOCKMIG_FUZZ_ONLY=${index} npx vitest run test/fuzz/images.test.ts`,
      kind, detail, outcome, fixtureMode: modeFor(index), case: c,
    }, null, 2)}\n`);
    failures.push({ index, kind, detail, file });
  };

  // each worker gets every W-th index of the list; a killed worker resumes after the case it was on
  const runShare = (share: number[], w: number) => new Promise<void>((resolve) => {
    let pos = 0;
    const startChild = (): void => {
      if (pos >= share.length) { resolve(); return; }
      const scratch = path.join(work, `w${w}`);
      // the child takes a contiguous run of the share: express it as (start, end, stride) over the share's indices
      const rest = share.slice(pos);
      const stride = rest.length > 1 ? rest[1]! - rest[0]! : 1;
      const contiguous = rest.every((x, i) => x === rest[0]! + i * stride);
      const list = contiguous ? rest : [rest[0]!];
      const cfg: WorkerConfig = { seed: o.seed, start: list[0]!, end: list[list.length - 1]! + 1, stride: Math.max(1, stride), fixtures, scratch };
      const child = spawn(process.execPath, ['--enable-source-maps', '--stack-size=984', worker], {
        env: { ...process.env, LOCKMIG_FUZZ_WORKER: JSON.stringify(cfg) }, stdio: ['ignore', 'pipe', 'pipe'],
      });
      let current: number | undefined;
      let startedAt = 0;
      let buf = '';
      let stderr = '';
      let killedFor: number | undefined;
      let bound = o.caseTimeoutMs;
      child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.startsWith('S ')) {
            const [idx, family] = line.slice(2).split(' ');
            current = Number(idx);
            bound = family === 'huge' ? HUGE_FACTOR * o.caseTimeoutMs : o.caseTimeoutMs;
            startedAt = performance.now();
          } else if (line.startsWith('R ')) {
            const r = JSON.parse(line.slice(2)) as CaseReport;
            outcomes.set(r.index, r);
            if (r.violations.length > 0) save(r.index, 'violation', r.violations.join('\n'), r);
            current = undefined;
            pos++;
            o.onProgress?.(outcomes.size + failures.filter((f) => f.kind !== 'violation').length, all.length);
          }
        }
      });
      const timer = setInterval(() => {
        if (current !== undefined && performance.now() - startedAt > bound && killedFor === undefined) {
          killedFor = current;
          child.kill('SIGKILL');
        }
      }, Math.min(250, o.caseTimeoutMs / 4));
      child.on('close', (code, signal) => {
        clearInterval(timer);
        if (killedFor !== undefined) {
          // the case outlived its bound; it may have finished while the kill was on its way, in
          // which case the child had already started the next one: that one runs again
          const idx = killedFor;
          save(idx, 'hang', `no result within ${bound} ms (killed)`);
          if (current === idx) pos++;
          startChild();
          return;
        }
        if (current !== undefined) {
          save(current, 'died', `worker exited (code ${code}, signal ${signal}) during the case:\n${stderr}`);
          pos++;
          startChild();
          return;
        }
        if (pos < share.length) {
          if (code !== 0) {
            // died between cases: report it against the next case rather than loop
            save(share[pos]!, 'died', `worker exited (code ${code}, signal ${signal}) between cases:\n${stderr}`);
            pos++;
          }
          startChild();
          return;
        }
        resolve();
      });
    };
    startChild();
  });

  const t0 = performance.now();
  const W = Math.max(1, Math.min(o.workers, all.length));
  await Promise.all(Array.from({ length: W }, (_, w) => runShare(all.filter((_, i) => i % W === w), w)));
  const total = performance.now() - t0;
  if (o.reportFile) fs.writeFileSync(o.reportFile, [...outcomes.values()].sort((a, b) => a.index - b.index).map((r) => JSON.stringify(r)).join('\n') + '\n');
  fs.rmSync(work, { recursive: true, force: true });
  fs.rmSync(worker, { force: true });

  const byFamily: Record<string, number> = {};
  const byStage: Record<Stage, number> = { read: 0, plan: 0, resolve: 0, ok: 0 };
  const byError: Record<string, number> = {};
  const times: { ms: number; index: number }[] = [];
  let oracle = 0;
  let generate = 0;
  for (const r of outcomes.values()) {
    oracle += r.ms;
    generate += r.genMs ?? 0;
    byFamily[r.family] = (byFamily[r.family] ?? 0) + 1;
    byStage[r.stage]++;
    if (r.error) byError[r.error] = (byError[r.error] ?? 0) + 1;
    times.push({ ms: r.ms, index: r.index });
  }
  times.sort((a, b) => a.ms - b.ms);
  const q = (p: number) => times.length ? times[Math.min(times.length - 1, Math.floor(p * times.length))]!.ms : 0;
  const last = times[times.length - 1];
  return {
    seed: o.seed, cases: all.length, completed: outcomes.size, failures, byFamily, byStage, byError,
    ms: { total, oracle, generate, p50: q(0.5), p99: q(0.99), max: last?.ms ?? 0, maxIndex: last?.index ?? -1 }, outcomes,
  };
}

export function formatSummary(s: FuzzSummary): string {
  const kv = (o: Readonly<Record<string, number>>) => Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  return [
    `image fuzz: seed ${s.seed}, ${s.completed}/${s.cases} cases in ${(s.ms.total / 1000).toFixed(1)} s`
      + ` (oracle ${(s.ms.oracle / 1000).toFixed(1)} s, generating and writing ${(s.ms.generate / 1000).toFixed(1)} s; per case p50 ${s.ms.p50.toFixed(2)} ms, p99 ${s.ms.p99.toFixed(1)} ms, max ${s.ms.max.toFixed(0)} ms at #${s.ms.maxIndex})`,
    `  families: ${kv(s.byFamily)}`,
    `  stopped at: ${kv(s.byStage)}`,
    `  errors: ${kv(s.byError)}`,
    `  failures: ${s.failures.length}${s.failures.length ? '' : ' (0 crashes, 0 hangs, 0 contract violations)'}`,
    ...s.failures.slice(0, 20).map((f) => `    #${f.index} ${f.kind}: ${f.detail.split('\n')[0]} (saved: ${f.file})`),
  ].join('\n');
}
