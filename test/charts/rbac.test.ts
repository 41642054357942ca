/**
 * The RBAC table in charts/lockmig/README.md is the documentation of record: this test parses it
 * and the Role/ClusterRole rules `helm template` renders and requires them to be the same set of
 * (component, resource, verb) grants, in both directions. It also forbids wildcards and any
 * grant on Secrets, pods/exec or nodes (but the controller's get of one Node). (What the grants allow on a real API server:
 * helm-server.test.ts and the component tests, which act as the chart's ServiceAccounts.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { missing } from '../helpers/env.js';
import { CHART_DIR, helmTemplate, type Manifest } from '../support/envtest/index.js';

const skip = missing({ k8s: true }, 'chart RBAC (helm template)');

interface Rule { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[] }

/** `resource[.group][/subresource]`, as the README writes it. */
function resourceKey(group: string, resource: string): string {
  const [base, sub] = resource.split('/');
  return `${base}${group ? `.${group}` : ''}${sub ? `/${sub}` : ''}`;
}

function grantsFromTemplates(docs: readonly Manifest[]): Set<string> {
  const out = new Set<string>();
  {
    for (const d of docs) {
      if (d.kind !== 'ClusterRole' && d.kind !== 'Role') continue;
      const component = d.metadata?.labels?.['app.kubernetes.io/component'];
      if (!component) throw new Error(`${d.kind} ${d.metadata.name} has no app.kubernetes.io/component label`);
      for (const r of (d.rules ?? []) as Rule[]) {
        for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) for (const v of r.verbs ?? []) {
          out.add(`${component} ${resourceKey(g, res)} ${v}`);
        }
      }
    }
  }
  return out;
}

function grantsFromReadme(): Set<string> {
  const text = fs.readFileSync(path.join(CHART_DIR, 'README.md'), 'utf8');
  const start = text.indexOf('| component | resource | verbs | why |');
  if (start < 0) throw new Error('README.md has no "| component | resource | verbs | why |" table');
  const out = new Set<string>();
  const lines = text.slice(start).split('\n');
  for (const line of lines.slice(2)) {
    if (!line.startsWith('|')) break;
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (cells.length !== 4) throw new Error(`RBAC table row has ${cells.length} cells: ${line}`);
    const [component, resourceCell, verbs, why] = cells as [string, string, string, string];
    if (why.length < 10) throw new Error(`RBAC table row without a reason: ${line}`);
    const resource = resourceCell.split(/\s+/)[0]!;
    for (const v of verbs.split(',').map((s) => s.trim()).filter(Boolean)) out.add(`${component} ${resource} ${v}`);
  }
  return out;
}

describe.skipIf(skip)('RBAC', () => {
  let templates = new Set<string>();
  let docs: Manifest[] = [];
  const readme = grantsFromReadme();
  beforeAll(async () => {
    docs = (await helmTemplate()).docs; // defaults: leader election on, so the Lease Role is there too
    templates = grantsFromTemplates(docs);
  });

  it('finds grants for all three components', () => {
    for (const c of ['controller', 'agent', 'webhook']) expect([...templates].some((g) => g.startsWith(`${c} `)), c).toBe(true);
  });

  it('every grant in the templates is documented in the README table', () => {
    expect([...templates].filter((g) => !readme.has(g)).sort()).toEqual([]);
  });

  it('every grant in the README table exists in the templates', () => {
    expect([...readme].filter((g) => !templates.has(g)).sort()).toEqual([]);
  });

  it('grants no wildcards, no secrets, no pods/exec, no nodes but the controller\'s get; ConfigMaps only to the agent, write-only', () => {
    for (const g of templates) {
      expect(g).not.toMatch(/\*/);
      expect(g).not.toMatch(/ (secrets|pods\/exec|pods\/attach|nodes\/proxy)( |$)/);
    }
    // a kubelet checkpoint source names a node: the controller reads that one Node, nothing else may
    expect([...templates].filter((g) => / nodes /.test(g))).toEqual(['controller nodes get']);
    // api storage: the agent writes the images' ConfigMaps (server-side apply) and reads none
    expect([...templates].filter((g) => / configmaps /.test(g)).sort()).toEqual(['agent configmaps create', 'agent configmaps patch']);
  });

  it('the agent and the webhook cannot change LockCheckpoint specs, only status (the webhook creates the checkpoint of a pod being stopped)', () => {
    for (const c of ['agent', 'webhook']) {
      for (const v of ['update', 'patch', 'delete']) expect(templates.has(`${c} lockcheckpoints.lockmig.dev ${v}`), `${c} ${v}`).toBe(false);
    }
    expect(templates.has('agent lockcheckpoints.lockmig.dev create')).toBe(false);
    expect(templates.has('webhook lockcheckpoints.lockmig.dev create')).toBe(true);
    expect(templates.has('agent lockcheckpoints.lockmig.dev/status patch')).toBe(true);
    expect(templates.has('webhook lockcheckpoints.lockmig.dev/status patch')).toBe(true);
  });

  it('only the controller holds leases, and only through a namespaced Role', () => {
    const leaseGrants = [...templates].filter((g) => g.includes(' leases.coordination.k8s.io '));
    expect(leaseGrants.length).toBeGreaterThan(0);
    expect(leaseGrants.every((g) => g.startsWith('controller '))).toBe(true);
    const roles = docs.filter((d) => d.kind === 'ClusterRole');
    expect(JSON.stringify(roles)).not.toMatch(/leases/);
  });
});
