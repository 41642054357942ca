/**
 * Image readers under fuzz: ≥ 10,000 generated hostile checkpoint directories (see
 * image-cases.ts for the families) through readCheckpoint → planRestore → fd limits →
 * resolveAll, the steps `lockmig restore` takes before it touches a user file. The contract
 * (image-oracle.ts): no crash (only ImageError / RestorePlanError / RestoreRefused), every
 * ImageError names its file and offset or field, accepted checkpoints are whole, accepted paths
 * stay under --allow per realpath(3), the directory is left as it was, and no case outlives the
 * per-case time bound (enforced by killing the worker).
 *
 * Environment:
 *   LOCKMIG_FUZZ_SEED      seed (default: a new one, printed)
 *   LOCKMIG_FUZZ_CASES     number of cases (default 10000; `npm run fuzz` runs 100000)
 *   LOCKMIG_FUZZ_ONLY      comma-separated indices to replay (with the seed of the failure)
 *   LOCKMIG_FUZZ_CASE_MS   per-case time bound (default 10000)
 *   LOCKMIG_FUZZ_WORKERS   child processes (default 1)
 *   LOCKMIG_FUZZ_FAILURES  where failing cases are saved (default fuzz-failures/)
 *   LOCKMIG_FUZZ_REPORT    write every case's outcome as a JSON line to this file
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCheckpoint, writeCheckpoint } from '../../src/image/index.js';
import { REPO_ROOT } from '../helpers/env.js';
import { formatSummary, runImageFuzz, scratchBase } from './harness.js';
import { familyOf, makeCase, randomModel } from './image-cases.js';
import { draftOf, looseFromModel, render } from './image-encode.js';
import { createLayout, fixture } from './layout.js';
import { Rng, newSeed } from './rng.js';

const SEED = process.env.LOCKMIG_FUZZ_SEED || newSeed();
const CASES = Number(process.env.LOCKMIG_FUZZ_CASES ?? 10_000);
const ONLY = process.env.LOCKMIG_FUZZ_ONLY?.split(',').filter(Boolean).map(Number);
const CASE_MS = Number(process.env.LOCKMIG_FUZZ_CASE_MS ?? 10_000);
const WORKERS = Number(process.env.LOCKMIG_FUZZ_WORKERS ?? 1);
const FAILURES = process.env.LOCKMIG_FUZZ_FAILURES ?? path.join(REPO_ROOT, 'fuzz-failures');

describe('the fuzz generator itself', () => {
  it('encodes a valid model byte for byte as writeCheckpoint does, and is deterministic per (seed, index)', () => {
    const base = fs.mkdtempSync(path.join(scratchBase(), 'lockmig-fuzzgen-'));
    try {
      const fx = createLayout(path.join(base, 'fx'), 'in-root');
      for (let i = 0; i < 30; i++) {
        const m = randomModel(new Rng('generator', i), fx);
        const dir = path.join(base, `w${i}`);
        writeCheckpoint(dir, m);
        const mine = render(draftOf(looseFromModel(m)));
        expect([...mine.keys()].sort()).toEqual(fs.readdirSync(dir).sort());
        for (const [name, b] of mine) expect(b.equals(fs.readFileSync(path.join(dir, name))), name).toBe(true);
        expect(readCheckpoint(dir)).toEqual(m);
      }
      const a = makeCase('s', 7, fixture('/x', 'in-root'));
      const b = makeCase('s', 7, fixture('/x', 'in-root'));
      expect(a.notes).toEqual(b.notes);
      expect([...a.files.entries()]).toEqual([...b.files.entries()]);
      for (let i = 0; i < 200; i++) expect(familyOf('s', i)).toBe(makeCase('s', i, fixture('/x', 'in-root')).family);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });
});

describe('image readers under fuzz', () => {
  it(`${ONLY ? `replays case(s) ${ONLY.join(', ')}` : `${CASES} hostile checkpoints`}: 0 crashes, 0 hangs, only documented errors`, async () => {
    process.stderr.write(`\n[fuzz] image fuzz seed ${SEED} (replay: LOCKMIG_FUZZ_SEED=${SEED})\n`);
    const s = await runImageFuzz({
      seed: SEED, cases: CASES, only: ONLY, caseTimeoutMs: CASE_MS, workers: WORKERS, failuresDir: FAILURES,
      ...(process.env.LOCKMIG_FUZZ_REPORT ? { reportFile: process.env.LOCKMIG_FUZZ_REPORT } : {}),
    });
    process.stderr.write(`${formatSummary(s)}\n`);
    expect(s.failures.map((f) => `#${f.index} ${f.kind}: ${f.detail.slice(0, 600)}`)).toEqual([]);
    expect(s.completed).toBe(s.cases);
    if (!ONLY) {
      expect(s.cases).toBeGreaterThanOrEqual(Math.min(CASES, 10_000));
      // the generator must reach every stage, or the fuzz proves less than it claims
      for (const st of ['read', 'plan', 'resolve', 'ok'] as const) expect(s.byStage[st], `cases stopping at ${st}`).toBeGreaterThan(0);
    }
  }, Math.max(120_000, CASES * 30));
});
