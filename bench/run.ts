/**
 * `npm run bench` → node dist/bench/run.js [--json] [--out FILE] [--only NAME,…]
 *
 * Runs every benchmark of the project in one process, one after the other, and prints one
 * table: each result next to the baseline it was measured against in the same run, and
 * the ratio. Benchmarks are loaded by file so a missing one is reported loudly, not fatal:
 *   bench/dump.ts      benchDump()
 *   bench/restore.ts   benchRestore()
 *   bench/handover.ts  benchHandover()
 *   bench/scale.ts     benchScale()     (real etcd + kube-apiserver, the real controller and agent)
 *   bench/import.ts    benchImport()
 *   bench/plugin.ts    benchPlugin()     (kubectl lockmig locks)
 * Each returns one result or a list: { name, baselineMs, ms, ratio, notes? }.
 * --json writes every result (and the machine it ran on) to bench-results.json (or --out).
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

import type { BenchResult } from './common.js';

interface Suite { readonly name: string; readonly file: string; readonly fn: string }

const SUITES: readonly Suite[] = [
  { name: 'dump', file: './dump.js', fn: 'benchDump' },
  { name: 'restore', file: './restore.js', fn: 'benchRestore' },
  { name: 'handover', file: './handover.js', fn: 'benchHandover' },
  { name: 'import', file: './import.js', fn: 'benchImport' },
  { name: 'scale', file: './scale.js', fn: 'benchScale' },
  { name: 'plugin', file: './plugin.js', fn: 'benchPlugin' },
];

interface Outcome { suite: string; results: BenchResult[]; error?: string; missing?: boolean }

function loud(msg: string): void {
  process.stderr.write(`\n!!!!!!!! ${msg} !!!!!!!!\n\n`);
}

function isResult(x: unknown): x is BenchResult {
  const r = x as BenchResult;
  return typeof r === 'object' && r !== null && typeof r.name === 'string' && typeof r.ms === 'number' && typeof r.baselineMs === 'number';
}

async function runSuite(s: Suite): Promise<Outcome> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(s.file) as Record<string, unknown>;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && String((err as Error).message).includes(s.file.replace('./', ''))) {
      loud(`benchmark "${s.name}" is MISSING: bench/${s.file.replace('./', '').replace('.js', '.ts')} is not there — its numbers are NOT in this run`);
      return { suite: s.name, results: [], missing: true };
    }
    loud(`benchmark "${s.name}" failed to load: ${(err as Error).message}`);
    return { suite: s.name, results: [], error: (err as Error).message };
  }
  const fn = mod[s.fn];
  if (typeof fn !== 'function') {
    loud(`benchmark "${s.name}": bench/${s.file} does not export ${s.fn}() — its numbers are NOT in this run`);
    return { suite: s.name, results: [], missing: true };
  }
  process.stderr.write(`running ${s.name} …\n`);
  try {
    const out: unknown = await (fn as () => Promise<unknown>)();
    const list = (Array.isArray(out) ? out : [out]).filter(isResult);
    if (list.length === 0) throw new Error(`${s.fn}() returned no results`);
    return { suite: s.name, results: list };
  } catch (err) {
    loud(`benchmark "${s.name}" FAILED: ${(err as Error).message}`);
    return { suite: s.name, results: [], error: (err as Error).message };
  }
}

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ').trimEnd()).join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, out: { type: 'string' }, only: { type: 'string' } }, strict: true });
  const only = values.only ? new Set(values.only.split(',')) : null;
  const outcomes: Outcome[] = [];
  for (const s of SUITES) if (!only || only.has(s.name)) outcomes.push(await runSuite(s));

  const rows = [['BENCHMARK', 'BASELINE', 'BASE', 'RESULT', 'RATIO', 'GOAL', 'NOTES']];
  const num = (x: number, unit: string): string => (Number.isFinite(x) ? `${x.toFixed(1)}${unit}` : '-');
  for (const o of outcomes) {
    if (o.missing) rows.push([o.suite, '-', '-', '-', '-', '-', 'MISSING (not run)']);
    else if (o.error) rows.push([o.suite, '-', '-', '-', '-', '-', `FAILED: ${o.error}`]);
    for (const r of o.results) {
      const goal = r.goal ? `${r.goal.text} ${r.goal.met ? 'met' : 'MISSED'}` : '';
      const unit = r.unit ?? ' ms';
      rows.push([r.name, r.baseline ?? '', num(r.baselineMs, unit), num(r.ms, unit), Number.isFinite(r.ratio) ? `${r.ratio.toFixed(2)}×` : '-', goal, r.notes ?? '']);
    }
  }
  process.stdout.write(`\nlockmig benchmarks — ${os.cpus().length} CPUs, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}, kernel ${os.release()}, node ${process.version}\n`);
  process.stdout.write('ratios are against a baseline measured in the same run (see each benchmark\'s notes)\n\n');
  process.stdout.write(`${table(rows)}\n`);

  if (values.json || values.out) {
    const file = values.out ?? 'bench-results.json';
    const doc = {
      at: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, loadavg: os.loadavg(), kernel: os.release(), node: process.version,
      results: outcomes.flatMap((o) => o.results.map((r) => ({ suite: o.suite, ...r }))),
      missing: outcomes.filter((o) => o.missing).map((o) => o.suite),
      failed: outcomes.filter((o) => o.error).map((o) => ({ suite: o.suite, error: o.error })),
    };
    fs.writeFileSync(file, `${JSON.stringify(doc, null, 2)}\n`);
    process.stdout.write(`\nresults written to ${file}\n`);
  }
  return outcomes.some((o) => o.error) ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
