/**
 * Every flag the chart passes to a component must be one that component's CLI parses: the
 * container args `helm template` renders (defaults, and every flag-changing value set) are
 * compared with the option table of src/cli/commands/<role>.ts (a renamed flag would otherwise
 * crash-loop the pods with a usage error).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, missing } from '../helpers/env.js';
import { helmTemplate } from '../support/envtest/index.js';

const skip = missing({ k8s: true }, 'chart flags (helm template)');

/** The three renderings, once per file (lazily: nothing runs when helm is missing). */
const renderings: { p?: Promise<Awaited<ReturnType<typeof helmTemplate>>[]> } = {};
async function containerArgs(role: string): Promise<string[]> {
  renderings.p ??= Promise.all([{}, { metrics: { enabled: false } }, { controller: { leaderElect: false, watchNamespace: 'prod' } }].map((values) => helmTemplate({ values })));
  const all: string[] = [];
  for (const { docs } of await renderings.p) {
    const w = docs.find((x) => ['Deployment', 'DaemonSet', 'Job'].includes(x.kind) && x.metadata.labels?.['app.kubernetes.io/component'] === role)!;
    all.push(...(w.spec.template.spec.containers[0].args as string[]));
  }
  return all;
}

/** Option names a command module declares for parse(): `'name': { type: … }` or `name: { type: … }`. */
function declaredOptions(role: string): Set<string> {
  const src = fs.readFileSync(path.join(REPO_ROOT, 'src/cli/commands', `${role}.ts`), 'utf8');
  const out = new Set<string>();
  for (const m of src.matchAll(/['"]?([a-z][a-z0-9-]*)['"]?\s*:\s*\{\s*type\s*:\s*['"](string|boolean)['"]/g)) out.add(m[1]!);
  return out;
}

describe.skipIf(skip)('chart → CLI flags', () => {
  it.each(['controller', 'agent', 'webhook', 'cleanup'])('%s accepts every flag the chart passes', async (role) => {
    const args = (await containerArgs(role)).filter((a) => a !== role);
    const opts = declaredOptions(role);
    expect(opts.size, `no options found in src/cli/commands/${role}.ts`).toBeGreaterThan(0);
    const flags = args.map((a) => /^--([a-z0-9-]+)/.exec(a)?.[1]).filter((f): f is string => f !== undefined);
    expect(flags.length).toBe(args.length);
    expect(flags.filter((f) => !opts.has(f))).toEqual([]);
  });
});
