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
