/**
 * The CRD YAML against the TypeScript API, offline: names, printer columns, enums, the field
 * inventory in both directions, and OpenAPI validation of sample objects with ajv (an independent
 * JSON Schema implementation) including the defaults. The real kube-apiserver is the authority on
 * what the CRD accepts, including its CEL rules: test/api/crd-server.test.ts.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { Ajv, type ValidateFunction } from 'ajv';
import {
  AGENT_STATES, CATEGORIES, GROUP, KIND, LIST_KIND, LOCK_KINDS, PHASES, PLURAL, RESTORE_MODES, SHORT_NAMES, SINGULAR, VERSION,
  DEFAULTS, LIMITS, checkRelativePath, validateSpec,
} from '../../src/api/lockcheckpoint.js';
import { TYPE_FIELDS } from '../../src/api/fields.js';
import { REPO_ROOT } from '../helpers/env.js';

type Schema = {
  type?: string; properties?: Record<string, Schema>; items?: Schema; enum?: unknown[]; description?: string; pattern?: string;
  required?: string[]; default?: unknown; 'x-kubernetes-validations'?: { rule: string; message: string }[]; [k: string]: unknown;
};

const crd = YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml'), 'utf8'));
const version = crd.spec.versions.find((v: { name: string }) => v.name === VERSION);
const root: Schema = version.schema.openAPIV3Schema;

function at(p: string): Schema {
  let s = root;
  for (const part of p.split('.')) {
    const list = part.endsWith('[]');
    const name = list ? part.slice(0, -2) : part;
    s = s.properties?.[name] as Schema;
    if (!s) throw new Error(`schema has no ${p}`);
    if (list) s = s.items as Schema;
  }
  return s;
}

function makeAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, validateFormats: true });
  ajv.addFormat('date-time', { type: 'string', validate: (s: string) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)) });
  ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  // x-kubernetes-list-type: set/map means unique items (by key for map)
  ajv.addKeyword({
    keyword: 'x-kubernetes-list-type',
    validate: (kind: string, data: unknown) => !Array.isArray(data) || kind === 'atomic' || new Set(data.map((d) => JSON.stringify(kind === 'map' ? (d as { type?: unknown }).type : d))).size === data.length,
  });
  for (const k of ['x-kubernetes-list-map-keys', 'x-kubernetes-validations', 'x-kubernetes-preserve-unknown-fields']) ajv.addKeyword({ keyword: k });
  return ajv;
}

const validate: ValidateFunction = makeAjv().compile(root);

const full = () => ({
  apiVersion: `${GROUP}/${VERSION}`, kind: KIND, metadata: { name: 'c1', namespace: 'ns' },
  spec: {
    sourcePodName: 'db-0', sourcePodUID: '11111111-2222-3333-4444-555555555555', containers: ['db', 'sidecar'], lockKinds: ['POSIX', 'OFD'],
    storage: { persistentVolumeClaim: { claimName: 'ckpts', subPath: 'team/c1' } }, restore: { mode: 'Handover', timeoutSeconds: 10, holdSeconds: 0 },
    ttlSecondsAfterFinished: 3600,
  },
  status: {
    observedGeneration: 1, phase: 'Dumped', message: 'ok', nodeName: 'node-a', sourcePodUID: '11111111-2222-3333-4444-555555555555',
    imageLocation: '/var/lib/lockmig/checkpoints/ns/c1', locks: { posix: 1, flock: 2, ofd: 3, lease: 0, total: 6 }, files: 3, skippedFds: 0,
    restoredPod: { name: 'db-1', uid: 'u', nodeName: 'node-b', time: '2026-01-01T00:00:10Z' },
    startTime: '2026-01-01T00:00:00Z', dispatchTime: '2026-01-01T00:00:01Z', completionTime: '2026-01-01T00:00:02Z',
    durations: { dumpMilliseconds: 800, totalMilliseconds: 2000 },
    conditions: [{ type: 'Ready', status: 'True', observedGeneration: 1, lastTransitionTime: '2026-01-01T00:00:02Z', reason: 'Dumped', message: 'done' }],
    agent: {
      nodeName: 'node-a', podUID: '11111111-2222-3333-4444-555555555555', state: 'Dumped', observedGeneration: 1, heartbeatTime: '2026-01-01T00:00:02Z',
      startTime: '2026-01-01T00:00:01Z', completionTime: '2026-01-01T00:00:02Z', dumpMilliseconds: 800, imageLocation: '/x', handoverSocket: '/run/lockmig/vault.sock',
      locks: { posix: 1, flock: 2, ofd: 3, lease: 0, total: 6 }, files: 3, skippedFds: 0, reason: 'Done', message: 'ok', imagesDeleted: false,
    },
  },
});

describe('CRD: identity', () => {
  it('is lockcheckpoints.lockmig.dev, namespaced, v1alpha1 served and stored, with the status subresource', () => {
    expect(crd.apiVersion).toBe('apiextensions.k8s.io/v1');
    expect(crd.metadata.name).toBe(`${PLURAL}.${GROUP}`);
    expect(crd.spec).toMatchObject({ group: GROUP, scope: 'Namespaced' });
    expect(crd.spec.names).toEqual({ kind: KIND, listKind: LIST_KIND, plural: PLURAL, singular: SINGULAR, shortNames: [...SHORT_NAMES], categories: [...CATEGORIES] });
    expect(crd.spec.versions).toHaveLength(1);
    expect(version).toMatchObject({ served: true, storage: true, subresources: { status: {} } });
  });

  it('printer columns are Phase, Source, Node, Target, Locks (+ Archive, Reason on -o wide), Age, and point at real schema fields', () => {
    const cols = version.additionalPrinterColumns as { name: string; jsonPath: string; type: string; priority?: number }[];
    expect(cols.filter((c) => !c.priority).map((c) => c.name)).toEqual(['Phase', 'Source', 'Node', 'Target', 'Locks', 'Age']);
    // -o wide: the archive of a kubelet checkpoint source (Source shows only a pod), then the Ready reason
    expect(cols.filter((c) => c.priority === 1).map((c) => [c.name, c.jsonPath])).toEqual([['Archive', '.spec.source.kubeletCheckpoint.file'], ['Reason', '.status.conditions[?(@.type=="Ready")].reason']]);
    expect(cols.find((c) => c.name === 'Locks')?.type).toBe('integer');
    expect(cols.find((c) => c.name === 'Age')).toMatchObject({ type: 'date', jsonPath: '.metadata.creationTimestamp' });
    for (const c of cols) {
      if (c.jsonPath.startsWith('.metadata')) continue;
      const p = c.jsonPath.slice(1).replace(/\[\?.*\]\.(\w+)$/, '[].$1');
      expect(() => at(p), c.jsonPath).not.toThrow();
    }
  });
});

describe('CRD: schema matches the TypeScript types', () => {
  it.each(Object.entries(TYPE_FIELDS))('%s has exactly the fields the TS type declares', (p, fields) => {
    expect(Object.keys(at(p).properties ?? {}).sort()).toEqual([...fields].sort());
  });

  it('every object in spec and status is covered by the TS inventory (no schema-only objects)', () => {
    const objects: string[] = [];
    const walk = (s: Schema, p: string) => {
      if (s.type === 'object' && s.properties) objects.push(p);
      for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, p ? `${p}.${k}` : k);
      if (s.items) walk(s.items, `${p}[]`);
    };
    walk(at('spec'), 'spec');
    walk(at('status'), 'status');
    expect(objects.sort()).toEqual(Object.keys(TYPE_FIELDS).sort());
  });

  it('enums equal the TS constants', () => {
    expect(at('spec.lockKinds').items?.enum).toEqual([...LOCK_KINDS]);
    expect(at('spec.restore.mode').enum).toEqual([...RESTORE_MODES]);
    expect(at('status.phase').enum).toEqual([...PHASES]);
    expect(at('status.agent.state').enum).toEqual([...AGENT_STATES]);
  });

  it('numeric limits and defaults equal the ones validateSpec and effectiveSpec use', () => {
    for (const f of ['timeoutSeconds', 'holdSeconds'] as const) {
      expect({ min: at(`spec.restore.${f}`).minimum, max: at(`spec.restore.${f}`).maximum }, f).toEqual(LIMITS[f]);
    }
    expect({ min: at('spec.ttlSecondsAfterFinished').minimum, max: at('spec.ttlSecondsAfterFinished').maximum }).toEqual(LIMITS.ttlSecondsAfterFinished);
    expect(at('spec.storage.nodeLocal.path').maxLength).toBe(LIMITS.pathMaxLength);
    expect(at('spec.containers').maxItems).toBe(LIMITS.maxContainers);
    expect(at('spec.restore.mode').default).toBe(DEFAULTS.restoreMode);
    expect(at('spec.restore.timeoutSeconds').default).toBe(DEFAULTS.timeoutSeconds);
    expect(at('spec.restore.holdSeconds').default).toBe(DEFAULTS.holdSeconds);
  });

  it('bounds every string and list in spec (the API server estimates the cost of self == oldSelf from maxLength/maxItems)', () => {
    const walk = (s: Schema, p: string) => {
      if (s.type === 'string') expect(s.maxLength, `${p} needs maxLength`).toBeTypeOf('number');
      if (s.type === 'array') expect(s.maxItems, `${p} needs maxItems`).toBeTypeOf('number');
      for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, `${p}.${k}`);
      if (s.items) walk(s.items, `${p}[]`);
    };
    walk(at('spec'), 'spec');
  });

  it('is structural (every node typed) and every spec field has a description for kubectl explain', () => {
    const walk = (s: Schema, p: string) => {
      expect(s.type, p).toBeTypeOf('string');
      if (p.startsWith('spec') && !p.includes('[]')) expect(s.description, `${p} needs a description`).toBeTruthy();
      for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, p ? `${p}.${k}` : k);
      if (s.items) walk(s.items, `${p}[]`);
    };
    walk(root, '');
  });
});

describe('CRD: OpenAPI validation of sample objects (ajv)', () => {
  it('accepts a fully populated object', () => {
    const o = full();
    expect(validate(o), JSON.stringify(validate.errors)).toBe(true);
  });

  it('applies the defaults the API server would: all lock kinds, api storage (fallback NodeLocal), restore Auto/30/300, target Annotated', () => {
    const o: Record<string, unknown> = { apiVersion: 'lockmig.dev/v1alpha1', kind: KIND, metadata: { name: 'c' }, spec: { sourcePodName: 'p' } };
    expect(validate(o)).toBe(true);
    expect((o.spec as Record<string, unknown>)).toEqual({
      sourcePodName: 'p', lockKinds: ['POSIX', 'FLOCK', 'OFD', 'LEASE'], storage: { api: { fallback: 'NodeLocal' } }, restore: { mode: 'Auto', timeoutSeconds: 30, holdSeconds: 300 },
      target: { policy: 'Annotated' },
    });
  });

  const bad: [string, (o: ReturnType<typeof full>) => void, string][] = [
    ['a lock kind outside the enum', (o) => { (o.spec.lockKinds as string[]) = ['POSIX', 'FCNTL']; }, '/spec/lockKinds/1'],
    ['duplicate containers', (o) => { o.spec.containers = ['db', 'db']; }, '/spec/containers'],
    ['an absolute subPath', (o) => { o.spec.storage.persistentVolumeClaim.subPath = '/etc'; }, '/spec/storage/persistentVolumeClaim/subPath'],
    ['a subPath with ..', (o) => { o.spec.storage.persistentVolumeClaim.subPath = 'a/../../b'; }, '/spec/storage/persistentVolumeClaim/subPath'],
    ['timeoutSeconds 0', (o) => { o.spec.restore.timeoutSeconds = 0; }, '/spec/restore/timeoutSeconds'],
    ['negative ttl', (o) => { o.spec.ttlSecondsAfterFinished = -1; }, '/spec/ttlSecondsAfterFinished'],
    ['an unknown restore mode', (o) => { (o.spec.restore as { mode: string }).mode = 'Teleport'; }, '/spec/restore/mode'],
    ['a bad pod name', (o) => { o.spec.sourcePodName = 'DB_0'; }, '/spec/sourcePodName'],
    ['a bad UID pin', (o) => { o.spec.sourcePodUID = 'xyz'; }, '/spec/sourcePodUID'],
    ['a bad phase', (o) => { (o.status as { phase: string }).phase = 'Done'; }, '/status/phase'],
    ['a condition without reason', (o) => { delete (o.status.conditions[0] as { reason?: string }).reason; }, '/status/conditions/0'],
    ['a negative lock count', (o) => { o.status.locks.total = -1; }, '/status/locks/total'],
  ];
  it.each(bad)('rejects %s at the right path', (_n, mutate, where) => {
    const o = full();
    mutate(o);
    expect(validate(o)).toBe(false);
    expect(validate.errors?.map((e) => e.instancePath)).toContain(where);
  });

  it('the CRD path pattern and the shared validator agree on a corpus of hostile and normal paths', () => {
    const re = new RegExp(at('spec.storage.nodeLocal.path').pattern as string, 'u');
    const corpus = ['a', 'a/b/c', '...', '.hidden', '..x', 'x..', 'a b', '.', '..', '../x', 'a/..', 'a/./b', '/abs', 'a//b', 'a/', '', 'a\\..\\b', 'nul\u0000x', 'ü/ö'];
    for (const p of corpus) expect(re.test(p), JSON.stringify(p)).toBe(checkRelativePath(p) === undefined);
    expect(at('spec.storage.persistentVolumeClaim.subPath').pattern).toBe(at('spec.storage.nodeLocal.path').pattern);
  });

  it('whatever ajv accepts for spec, validateSpec accepts too, and the reverse for the rejects above', () => {
    const o = full();
    expect(validateSpec(o.spec)).toEqual([]);
    for (const [, mutate] of bad.filter(([, , w]) => w.startsWith('/spec'))) {
      const x = full();
      mutate(x);
      expect(validateSpec(x.spec).length, JSON.stringify(x.spec)).toBeGreaterThan(0);
    }
  });
});
