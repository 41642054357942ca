/**
 * Child process of the image fuzz harness (bundled by esbuild, see harness.ts): generates the
 * cases of its share of the index range, writes each into a scratch directory and runs the
 * oracle on it. It reports over stdout, one line per event, so the parent can tell which case
 * was running when a time bound expired:
 *
 *   S <index> <family>  case started (generating and writing it count towards the bound)
 *   R <json outcome>    case finished
 *
 * Configuration: LOCKMIG_FUZZ_WORKER (JSON, see WorkerConfig).
 */
import fs from 'node:fs';
import path from 'node:path';
import { familyOf, makeCase, modeFor } from './image-cases.js';
import { fdLimitOfThisProcess, runCase, writeCase } from './image-oracle.js';
import { fixture } from './layout.js';
import { checkFdLimit } from '../../src/engine/restore-plan.js';
import { openFileLimit } from '../../src/engine/restore-sys.js';

export interface WorkerConfig {
  readonly seed: string;
  /** indices start, start+stride, … below end */
  readonly start: number;
  readonly end: number;
  readonly stride: number;
  /** directory holding the two fixtures (in-root/, host/) */
  readonly fixtures: string;
  /** private scratch directory of this worker */
  readonly scratch: string;
}

function main(): void {
  const cfg = JSON.parse(process.env.LOCKMIG_FUZZ_WORKER ?? '') as WorkerConfig;
  const fxs = { 'in-root': fixture(path.join(cfg.fixtures, 'in-root'), 'in-root'), host: fixture(path.join(cfg.fixtures, 'host'), 'host') };
  const dir = path.join(cfg.scratch, 'case');
  const rt = path.join(cfg.scratch, 'roundtrip');
  fs.mkdirSync(rt, { recursive: true });
  // the oracle's limit comes from /proc/self/limits, the product's check from getrlimit(2)
  const limit = fdLimitOfThisProcess();
  const productLimit = openFileLimit();
  const out = (s: string) => { fs.writeSync(1, s); };
  for (let i = cfg.start; i < cfg.end; i += cfg.stride) {
    const fx = fxs[modeFor(i)];
    out(`S ${i} ${familyOf(cfg.seed, i)}\n`);
    let c: ReturnType<typeof makeCase>;
    const g0 = performance.now();
    try {
      c = makeCase(cfg.seed, i, fx);
      writeCase(dir, c.files);
    } catch (err) {
      // a defect of the fuzzer itself, not of the product: reported as such
      out(`R ${JSON.stringify({ index: i, family: 'generator', stage: 'read', violations: [`fuzz generator failed: ${(err as Error).stack}`], ms: 0 })}\n`);
      continue;
    }
    const genMs = performance.now() - g0;
    const o = runCase(dir, c.files, { fx, fdLimit: limit, scratch: rt, checkFds: (p) => checkFdLimit(p, productLimit) });
    out(`R ${JSON.stringify({ index: i, family: c.family, ...o, ms: Math.round(o.ms * 100) / 100, genMs: Math.round(genMs * 100) / 100 })}\n`);
  }
}

main();
