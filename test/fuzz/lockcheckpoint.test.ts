/**
 * LockCheckpoint objects under fuzz, against the pure layers: parseLockCheckpoint, validateSpec,
 * validateStatus and the controller's reconcile (see lockcheckpoint-gen.ts for what is generated).
 * Each object is first put through the CRD's own schema by the fake API server's structural
 * schema code (defaults, pruning, validation, CEL): schema-valid objects reach the controller as a
 * real server would store them, the others as a server without the schema would.
 *
 * Properties:
 *  - parse/validate never throw anything but LockCheckpointError, never mutate their input, and
 *    what parseLockCheckpoint returns validates cleanly and is deeply frozen;
 *  - the generator's "valid" and "absurd" specs pass the CRD schema (so they can be reused
 *    against a real API server, which must accept them);
 *  - reconcile never throws; every status it wants passes validateStatus; every field it patches
 *    passes the CRD's status schema (else the API server refuses the write and the object is
 *    stuck); requeueAfterMs is a finite delay a Node.js timer honours (0 … 2^31-1 ms);
 *  - simulated passes (apply the patch, reconcile again; at the same time after a write, after
 *    the requeue delay otherwise) converge: no write loop, no run of requeue-0 passes without a
 *    change (hot loop);
 *  - an invalid spec ends Failed with reason InvalidSpec (unless it was already Failed, or the
 *    object is being deleted).
 *
 *   LOCKMIG_FUZZ_CR_CASES  number of scenarios (default 3000; `npm run fuzz` runs 30000)
 *   LOCKMIG_FUZZ_SEED      seed (default: a new one, printed)
 *   LOCKMIG_FUZZ_ONLY      comma-separated scenario indices to replay
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/env.js';
import { makeScenario } from './lockcheckpoint-gen.js';
import { runScenario } from './lockcheckpoint-oracle.js';
import { newSeed } from './rng.js';

const SEED = process.env.LOCKMIG_FUZZ_SEED || newSeed();
const CASES = Number(process.env.LOCKMIG_FUZZ_CR_CASES ?? 3000);
const FAILURES = process.env.LOCKMIG_FUZZ_FAILURES ?? path.join(REPO_ROOT, 'fuzz-failures');
const ONLY = process.env.LOCKMIG_FUZZ_ONLY?.split(',').filter(Boolean).map(Number);

describe('LockCheckpoint objects under fuzz (pure layers)', () => {
  it(`${CASES} generated objects: no throw, valid statuses the API server accepts, no hot loop, invalid specs end Failed/InvalidSpec`, async () => {
    process.stderr.write(`\n[fuzz] LockCheckpoint fuzz seed ${SEED} (replay: LOCKMIG_FUZZ_SEED=${SEED})\n`);
    const failures: string[] = [];
    const phases: Record<string, number> = {};
    const kinds: Record<string, number> = {};
    let schemaValid = 0;
    let invalidSpecs = 0;
    let maxMs = 0;
    const t0 = performance.now();
    let n = 0;
    for (const i of ONLY ?? Array.from({ length: CASES }, (_, k) => k)) {
      // let vitest's worker answer its RPCs (a long synchronous loop makes it time out)
      if (++n % 100 === 0) await new Promise((r) => setImmediate(r));
      const s = makeScenario(SEED, i);
      const r = runScenario(s);
      kinds[`${s.specKind}/${s.statusKind}`] = (kinds[`${s.specKind}/${s.statusKind}`] ?? 0) + 1;
      phases[`${r.finalPhase}/${r.finalReason}`] = (phases[`${r.finalPhase}/${r.finalReason}`] ?? 0) + 1;
      if (r.schemaValid) schemaValid++;
      if (r.invalidSpecChecked) invalidSpecs++;
      maxMs = Math.max(maxMs, r.ms);
      if (r.ms > 2000) process.stderr.write(`  slow scenario #${i}: ${r.ms.toFixed(0)} ms (${s.specKind}/${s.statusKind}; ${s.notes.join(', ')})\n`);
      if (r.violations.length) {
        failures.push(`#${i} (${s.specKind} spec, ${s.statusKind} status; ${s.notes.join(', ').slice(0, 150)}): ${r.violations.join(' | ').slice(0, 700)}`);
        fs.mkdirSync(FAILURES, { recursive: true });
        fs.writeFileSync(path.join(FAILURES, `lockcheckpoint-${SEED}-${i}.json`), `${JSON.stringify({
          replay: `LOCKMIG_FUZZ_SEED=${SEED} LOCKMIG_FUZZ_ONLY=${i} npx vitest run test/fuzz/lockcheckpoint.test.ts`, violations: r.violations, scenario: s,
        }, null, 2)}\n`);
      }
    }
    const top = (o: Record<string, number>) => Object.entries(o).sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, n]) => `${k} ${n}`).join(', ');
    process.stderr.write(`LockCheckpoint fuzz: seed ${SEED}, ${CASES} scenarios in ${((performance.now() - t0) / 1000).toFixed(1)} s (max ${maxMs.toFixed(0)} ms), `
      + `${schemaValid} schema-valid, ${invalidSpecs} with an invalid spec checked for Failed/InvalidSpec; failures ${failures.length}\n  kinds: ${top(kinds)}\n  outcomes: ${top(phases)}\n`);
    for (const f of failures.slice(0, 15)) process.stderr.write(`  ${f}\n`);
    expect(failures.slice(0, 20)).toEqual([]);
    if (!ONLY) {
      expect(schemaValid).toBeGreaterThan(CASES / 4);
      expect(invalidSpecs).toBeGreaterThan(CASES / 20);
    }
  }, 600_000);
});
