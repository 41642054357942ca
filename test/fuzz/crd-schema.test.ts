/** The fuzz oracle's offline schema (ajv) behaves like the API server on the points it relies on. */
import { describe, expect, it } from 'vitest';
import { processCustomResource, validateTree, type SchemaError } from './crd-schema.js';
import { SCHEMA } from './lockcheckpoint-oracle.js';

describe('offline CRD schema', () => {
  it('fills in defaults, prunes unknown fields but keeps maps, and rejects bad values at their path', () => {
    const o: Record<string, unknown> = { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'x' }, spec: { sourcePodName: 'p', bogus: 1 }, status: { source: { podName: 'p', podUID: 'u', labels: { app: 'db' } } } };
    expect(processCustomResource(o, SCHEMA).errors).toEqual([]);
    const spec = o.spec as Record<string, unknown>;
    expect(spec.bogus).toBeUndefined();
    expect(spec.storage).toEqual({ api: { fallback: 'NodeLocal' } });
    expect(spec.restore).toEqual({ mode: 'Auto', timeoutSeconds: 30, holdSeconds: 300 });
    expect((o.status as { source: { labels: unknown } }).source.labels).toEqual({ app: 'db' });
    const bad: Record<string, unknown> = { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'x' }, spec: { sourcePodName: 'P_0' } };
    expect(processCustomResource(bad, SCHEMA).errors.map((e) => e.field)).toContain('spec.sourcePodName');
    const errs: SchemaError[] = [];
    validateTree('Bogus', SCHEMA.properties!.status!.properties!.phase!, 'status.phase', errs);
    expect(errs).toHaveLength(1);
  });
});
