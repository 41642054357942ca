/**
 * The examples users copy must work: the LockCheckpoint example passes the CRD's schema and the
 * shared validator; the restore pod carries the label the chart's webhook selects on and the
 * annotation naming that checkpoint, and the webhook's own decision function admits it and
 * wraps its command with the bundle's loader-based argv.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import Ajv from 'ajv';
import YAML from 'yaml';
import type { V1Pod } from '@kubernetes/client-node';
import { REPO_ROOT } from '../helpers/env.js';
import { parseLockCheckpoint, type LockCheckpoint } from '../../src/api/index.js';
import { decideRestore, DEFAULT_WEBHOOK_CONFIG } from '../../src/webhook/mutate.js';
import { SHIM_CURRENT, shimCommand } from '../../src/bundle/command.js';
import { CHART_DIR } from '../support/envtest/index.js';

const example = (f: string): unknown => YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'examples', f), 'utf8'));
const checkpointRaw = example('lockcheckpoint.yaml') as Record<string, any>;
const pod = example('restore-pod.yaml') as V1Pod;
const values = YAML.parse(fs.readFileSync(path.join(CHART_DIR, 'values.yaml'), 'utf8')) as Record<string, any>;

describe('examples/lockcheckpoint.yaml', () => {
  it('passes the CRD schema', () => {
    const crd = YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml'), 'utf8')) as any;
    const schema = crd.spec.versions.find((v: any) => v.name === 'v1alpha1').schema.openAPIV3Schema;
    // strict: false lets ajv ignore the x-kubernetes-* extensions (CEL rules are checked by E's tests)
    const v = new Ajv({ strict: false, allErrors: true }).compile(schema);
    expect(v(checkpointRaw), JSON.stringify(v.errors)).toBe(true);
    expect(checkpointRaw.apiVersion).toBe(`${crd.spec.group}/v1alpha1`);
    expect(checkpointRaw.kind).toBe(crd.spec.names.kind);
  });
  it('passes the shared validator every component uses', () => {
    const ck = parseLockCheckpoint(checkpointRaw);
    expect(ck.spec.sourcePodName).toBe('db-0');
    expect(ck.spec.storage?.nodeLocal?.path).toBe('db-move');
  });
});

describe('examples/restore-pod.yaml', () => {
  it('carries the label the chart registers the webhook for, and names the example checkpoint', () => {
    for (const [k, v] of Object.entries(values.webhook.objectSelector.matchLabels as Record<string, string>)) {
      expect(pod.metadata?.labels?.[k], k).toBe(v);
    }
    expect(pod.metadata?.annotations?.['lockmig.dev/restore-from']).toBe(checkpointRaw.metadata.name);
    expect(pod.metadata?.namespace).toBe(checkpointRaw.metadata.namespace);
  });

  it('is admitted by the webhook and starts through the bundled loader', () => {
    const ck = parseLockCheckpoint({
      ...checkpointRaw,
      status: { phase: 'Dumped', nodeName: 'node-a', sourcePodUID: '6f1c2a9e-3b4d-4c8e-9a1f-2d7e5b0c4a11' },
    }) as LockCheckpoint;
    const d = decideRestore(pod, ck, DEFAULT_WEBHOOK_CONFIG, { now: '2026-11-27T00:00:00Z' });
    expect(d.message ?? '').not.toMatch(/denied|cannot|must/i);
    expect(d.allowed).toBe(true);
    const cmd = d.patch?.find((p) => p.op !== 'remove' && p.op !== 'test' && p.path === '/spec/containers/0/command') as { value: string[] } | undefined;
    expect(cmd).toBeDefined();
    const prefix = shimCommand(`${DEFAULT_WEBHOOK_CONFIG.mountRoot}/shim/${SHIM_CURRENT}`);
    expect(cmd!.value.slice(0, prefix.length)).toEqual(prefix);
    const dd = cmd!.value.indexOf('--');
    expect(cmd!.value.slice(dd + 1)).toEqual(['sqlite-server', '--db', '/data/app.db']);
  });
});

describe('examples/kubelet-checkpoint.yaml (a kubelet checkpoint archive as the source)', () => {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(REPO_ROOT, 'examples', 'kubelet-checkpoint.yaml'), 'utf8')).map((d) => d.toJSON());
  const [ckRaw, restorePod] = docs as [Record<string, any>, V1Pod];

  it('passes the CRD schema and the shared validator, and docs/criu.md shows the very same objects', () => {
    const crd = YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml'), 'utf8')) as any;
    const v = new Ajv({ strict: false, allErrors: true }).compile(crd.spec.versions.find((x: any) => x.name === 'v1alpha1').schema.openAPIV3Schema);
    expect(v(ckRaw), JSON.stringify(v.errors)).toBe(true);
    const ck = parseLockCheckpoint(ckRaw);
    expect(ck.spec.source?.kubeletCheckpoint).toEqual({ node: 'worker-1', file: 'checkpoint-db-0_shop-db-2026-12-05T07:00:00Z.tar' });
    expect(ck.spec.sourcePodName).toBeUndefined();
    const md = fs.readFileSync(path.join(REPO_ROOT, 'docs/criu.md'), 'utf8');
    const section = md.slice(md.indexOf('## From a kubelet checkpoint to a restore pod'));
    const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => YAML.parse(m[1]!));
    expect(blocks).toEqual([ckRaw, restorePod]);
  });

  it('its restore pod is admitted once the agent imported the archive: only the imported container is wrapped', () => {
    const ck = parseLockCheckpoint({
      ...ckRaw,
      status: {
        phase: 'Dumped', nodeName: 'worker-1',
        agent: { nodeName: 'worker-1', state: 'Dumped', storage: 'api', containers: ['db'], configMaps: [{ name: 'lockmig-db-from-kubelet-0', items: [{ key: 'db.manifest.json', path: 'db/manifest.json' }] }] },
      },
    }) as LockCheckpoint;
    expect(restorePod.metadata?.annotations?.['lockmig.dev/restore-from']).toBe(ckRaw.metadata.name);
    for (const [k, val] of Object.entries(values.webhook.objectSelector.matchLabels as Record<string, string>)) expect(restorePod.metadata?.labels?.[k], k).toBe(val);
    const d = decideRestore(restorePod, ck, DEFAULT_WEBHOOK_CONFIG, { now: '2026-12-05T08:00:00Z' });
    expect(d.allowed, d.message).toBe(true);
    const cmd = d.patch?.find((p) => p.op !== 'remove' && p.op !== 'test' && p.path === '/spec/containers/0/command') as { value: string[] } | undefined;
    expect(cmd!.value).toEqual(expect.arrayContaining(['restore', '--image', '/lockmig/images/db', '--timeout', '60', '--allow', '/data']));
    expect(cmd!.value.slice(cmd!.value.indexOf('--') + 1)).toEqual(['sqlite-server', '--db', '/data/app.db']);
  });
});
