/**
 * Every flag the chart passes to a component must be one that component's CLI parses: the
 * templates' container args are compared with the option table of src/cli/commands/<role>.ts
 * (a renamed flag would otherwise crash-loop the pods with a usage error).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/env.js';
import { templateDocs } from './chart-files.js';

function containerArgs(file: string): string[] {
  const d = templateDocs(file).find((x) => x.kind === 'Deployment' || x.kind === 'DaemonSet') as any;
  return d.spec.template.spec.containers[0].args as string[];
}

/** Option names a command module declares for parse(): `'name': { type: … }` or `name: { type: … }`. */
function declaredOptions(role: string): Set<string> {
  const src = fs.readFileSync(path.join(REPO_ROOT, 'src/cli/commands', `${role}.ts`), 'utf8');
  const out = new Set<string>();
  for (const m of src.matchAll(/['"]?([a-z][a-z0-9-]*)['"]?\s*:\s*\{\s*type\s*:\s*['"](string|boolean)['"]/g)) out.add(m[1]!);
  return out;
}

const cases: Array<[string, string]> = [
  ['controller', 'controller-deployment.yaml'],
  ['agent', 'agent-daemonset.yaml'],
  ['webhook', 'webhook-deployment.yaml'],
];

describe('chart → CLI flags', () => {
  it.each(cases)('%s accepts every flag %s passes', (role, file) => {
    const args = containerArgs(file);
    expect(args[0]).toBe(role);
    const opts = declaredOptions(role);
    expect(opts.size, `no options found in src/cli/commands/${role}.ts`).toBeGreaterThan(0);
    const flags = args.slice(1).map((a) => /^--([a-z0-9-]+)/.exec(a)?.[1]).filter((f): f is string => f !== undefined);
    expect(flags.length).toBe(args.length - 1);
    expect(flags.filter((f) => !opts.has(f))).toEqual([]);
  });
});
