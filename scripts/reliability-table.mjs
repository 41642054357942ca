#!/usr/bin/env node
// Renders the fault × moment → outcome table of docs/reliability.md from the outcome log the fault
// suite writes (fault-outcomes.jsonl, one JSON line per scenario run; see test/node/support/faults.ts).
//   node scripts/reliability-table.mjs [OUTCOMES.jsonl ...]   (default: fault-outcomes.jsonl)
// Replaces the text between the BEGIN/END markers of docs/reliability.md; prints the table too.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const files = process.argv.slice(2);
if (files.length === 0) files.push(path.join(root, 'fault-outcomes.jsonl'));
const rows = [];
for (const f of files) {
  for (const line of fs.readFileSync(f, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try { rows.push(JSON.parse(line)); } catch { console.error(`${f}: skipping a line that is not JSON`); }
  }
}
if (rows.length === 0) { console.error('no outcomes recorded'); process.exit(1); }

const groups = new Map();
for (const r of rows) {
  const k = `${r.fault}\u0000${r.moment}`;
  if (!groups.has(k)) groups.set(k, { fault: r.fault, moment: r.moment, outcomes: new Map(), ms: [], last: r });
  const g = groups.get(k);
  g.outcomes.set(r.outcome, (g.outcomes.get(r.outcome) ?? 0) + 1);
  g.ms.push(r.ms);
  if (r.at >= g.last.at) g.last = r;
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const esc = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const first = rows.map((r) => r.at).sort()[0];
const last = rows.map((r) => r.at).sort().at(-1);
const out = [
  `Produced by \`npm run test:faults\` (${rows.length} scenario runs, ${first.slice(0, 10)} … ${last.slice(0, 10)}), rendered by \`node scripts/reliability-table.mjs\`.`,
  '',
  '| fault | moment | outcome (runs) | median time to outcome | last run |',
  '|---|---|---|---|---|',
  ...[...groups.values()].map((g) => {
    const outcomes = [...g.outcomes.entries()].map(([o, n]) => `${o} (${n})`).join(', ');
    return `| ${esc(g.fault)} | ${esc(g.moment)} | ${outcomes} | ${(median(g.ms) / 1000).toFixed(1)} s | ${esc(g.last.detail)} |`;
  }),
].join('\n');
console.log(out);

const doc = path.join(root, 'docs', 'reliability.md');
const BEGIN = '<!-- BEGIN fault table (scripts/reliability-table.mjs) -->';
const END = '<!-- END fault table -->';
if (fs.existsSync(doc)) {
  const text = fs.readFileSync(doc, 'utf8');
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  if (a >= 0 && b > a) {
    fs.writeFileSync(doc, `${text.slice(0, a + BEGIN.length)}\n${out}\n${text.slice(b)}`);
    console.error(`updated ${path.relative(root, doc)}`);
  }
}
