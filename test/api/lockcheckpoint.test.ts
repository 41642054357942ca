/**
 * The shared validators every enforcement point calls: validateSpec's messages, parseLockCheckpoint
 * turning raw JSON into a frozen typed object (or one error listing every problem, indexed), and
 * the storage-root rule.
 */
import { describe, expect, it } from 'vitest';
import {
  LockCheckpointError, effectiveSpec, imageLocationFor, nodeLocalDir, parseLockCheckpoint, validateSpec, validateStatus,
} from '../../src/api/lockcheckpoint.js';

const ok = { sourcePodName: 'db-0' };

describe('validateSpec', () => {
  it('accepts the minimal spec and a full one', () => {
    expect(validateSpec(ok)).toEqual([]);
    expect(validateSpec({
      sourcePodName: 'db-0', sourcePodUID: '11111111-2222-3333-4444-555555555555', containers: ['a', 'b-2'], lockKinds: ['LEASE'],
      storage: { nodeLocal: { path: 'team/db' } }, restore: { mode: 'Retake', timeoutSeconds: 3600, holdSeconds: 0 }, ttlSecondsAfterFinished: 0,
    })).toEqual([]);
  });

  const cases: [string, unknown, string, RegExp][] = [
    ['not an object', 'x', 'spec', /must be an object/],
    ['empty pod name', { sourcePodName: '' }, 'spec.sourcePodName', /is required/],
    ['pod name with uppercase', { sourcePodName: 'Db' }, 'spec.sourcePodName', /DNS-1123/],
    ['unknown field', { ...ok, podName: 'x' }, 'spec.podName', /unknown field/],
    ['bad container at index 1', { ...ok, containers: ['a', 'B!'] }, 'spec.containers[1]', /container name/],
    ['duplicate container', { ...ok, containers: ['a', 'a'] }, 'spec.containers[1]', /duplicate container "a"/],
    ['empty lockKinds', { ...ok, lockKinds: [] }, 'spec.lockKinds', /must not be empty \(omit it for all kinds/],
    ['unknown lock kind', { ...ok, lockKinds: ['POSIX', 'fcntl'] }, 'spec.lockKinds[1]', /must be one of POSIX, FLOCK, OFD, LEASE, got "fcntl"/],
    ['absolute path', { ...ok, storage: { nodeLocal: { path: '/etc' } } }, 'spec.storage.nodeLocal.path', /must be relative to the storage root, not absolute/],
    ['dot-dot path', { ...ok, storage: { nodeLocal: { path: 'a/../../etc' } } }, 'spec.storage.nodeLocal.path', /must stay under the storage root: ".." is not allowed/],
    ['dot segment', { ...ok, storage: { nodeLocal: { path: './a' } } }, 'spec.storage.nodeLocal.path', /"\." segments/],
    ['trailing slash', { ...ok, storage: { nodeLocal: { path: 'a/' } } }, 'spec.storage.nodeLocal.path', /empty segments/],
    ['NUL byte', { ...ok, storage: { nodeLocal: { path: 'a\u0000b' } } }, 'spec.storage.nodeLocal.path', /NUL/],
    ['too long', { ...ok, storage: { nodeLocal: { path: 'a'.repeat(513) } } }, 'spec.storage.nodeLocal.path', /at most 512/],
    ['pvc subPath escaping the volume', { ...ok, storage: { persistentVolumeClaim: { claimName: 'c', subPath: '..' } } }, 'spec.storage.persistentVolumeClaim.subPath', /must stay under the volume/],
    ['pvc without claimName', { ...ok, storage: { persistentVolumeClaim: {} } }, 'spec.storage.persistentVolumeClaim.claimName', /is required/],
    ['neither storage member', { ...ok, storage: {} }, 'spec.storage', /exactly one of api, nodeLocal or persistentVolumeClaim/],
    ['timeout out of range', { ...ok, restore: { timeoutSeconds: 0 } }, 'spec.restore.timeoutSeconds', /between 1 and 3600, got 0/],
    ['fractional hold', { ...ok, restore: { holdSeconds: 1.5 } }, 'spec.restore.holdSeconds', /integer/],
    ['negative ttl', { ...ok, ttlSecondsAfterFinished: -5 }, 'spec.ttlSecondsAfterFinished', /between 0 and/],
    ['bad UID', { ...ok, sourcePodUID: 'abc' }, 'spec.sourcePodUID', /UID/],
  ];
  it.each(cases)('%s → error at %s', (_n, spec, field, msg) => {
    const errs = validateSpec(spec);
    const e = errs.find((x) => x.field === field);
    expect(e, JSON.stringify(errs)).toBeDefined();
    expect(e?.message).toMatch(msg);
  });

  it('reports every problem at once, not just the first', () => {
    const errs = validateSpec({ sourcePodName: 'X', lockKinds: ['A'], restore: { mode: 'Z' } });
    expect(errs.map((e) => e.field)).toEqual(['spec.sourcePodName', 'spec.lockKinds[0]', 'spec.restore.mode']);
  });
});

describe('parseLockCheckpoint', () => {
  const raw = () => ({
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'c1', namespace: 'ns', generation: 2, labels: { a: 'b' } },
    spec: { sourcePodName: 'db-0' }, status: { phase: 'Dumping', nodeName: 'n1', agent: { nodeName: 'n1', state: 'Dumping' } },
  });

  it('returns a deeply frozen copy and leaves the input untouched', () => {
    const input = raw();
    const ck = parseLockCheckpoint(input);
    expect(ck.spec.sourcePodName).toBe('db-0');
    expect(Object.isFrozen(ck)).toBe(true);
    expect(Object.isFrozen(ck.metadata.labels)).toBe(true);
    expect(Object.isFrozen(ck.status?.agent)).toBe(true);
    expect(() => { (ck.spec as { sourcePodName: string }).sourcePodName = 'x'; }).toThrow(TypeError);
    expect(Object.isFrozen(input)).toBe(false);
  });

  it('throws one LockCheckpointError listing every problem with indexed fields', () => {
    const bad = { ...raw(), kind: 'Pod', metadata: { name: 'Bad_Name' }, spec: { sourcePodName: 'p', containers: ['ok', 7] }, status: { phase: 'Done', conditions: [{ type: 'Ready', status: 'Maybe', reason: 'R' }] } };
    let err: unknown;
    try { parseLockCheckpoint(bad); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(LockCheckpointError);
    const fields = (err as LockCheckpointError).errors.map((e) => e.field);
    expect(fields).toEqual(['kind', 'metadata.name', 'metadata.namespace', 'spec.containers[1]', 'status.phase', 'status.conditions[0].status']);
    expect((err as Error).message).toMatch(/^invalid LockCheckpoint: kind: must be LockCheckpoint, got "Pod"; metadata\.name: must be a DNS-1123 subdomain/);
  });

  it('rejects non-objects and missing spec clearly', () => {
    expect(() => parseLockCheckpoint(null)).toThrow(/\(root\): must be a JSON object/);
    expect(() => parseLockCheckpoint([])).toThrow(/must be a JSON object/);
    expect(() => parseLockCheckpoint({ metadata: { name: 'a', namespace: 'b' } })).toThrow(/spec: is required and must be an object/);
  });

  it('validateStatus flags a malformed agent report', () => {
    expect(validateStatus({ agent: { state: 'Dumped', locks: { total: -1 } } }).map((e) => e.field)).toEqual(['status.agent.nodeName', 'status.agent.locks.total']);
  });
});

describe('storage location', () => {
  it('defaults: api storage (node-local copy under <root>/<namespace>/<name>, fallback NodeLocal), restore Auto/30/300, all lock kinds, target Annotated', () => {
    const e = effectiveSpec({ sourcePodName: 'p' }, 'c1');
    expect(e).toEqual({
      sourcePodName: 'p', containers: [], lockKinds: ['POSIX', 'FLOCK', 'OFD', 'LEASE'], storage: { kind: 'api', fallback: 'NodeLocal', path: 'c1' },
      restore: { mode: 'Auto', timeoutSeconds: 30, holdSeconds: 300 }, target: { policy: 'Annotated' },
    });
    expect(effectiveSpec({ sourcePodName: 'p', storage: { nodeLocal: {} } }, 'c1').storage).toEqual({ kind: 'nodeLocal', path: 'c1' });
    expect(imageLocationFor(e, 'ns')).toBe('/var/lib/lockmig/checkpoints/ns/c1');
    expect(imageLocationFor(effectiveSpec({ sourcePodName: 'p', storage: { persistentVolumeClaim: { claimName: 'v' } } }, 'c1'), 'ns')).toBe('pvc://v/c1');
  });

  it('nodeLocalDir joins under the root and refuses anything that could climb out', () => {
    expect(nodeLocalDir('/var/lib/lockmig/checkpoints/', 'ns', 'a/b')).toBe('/var/lib/lockmig/checkpoints/ns/a/b');
    expect(nodeLocalDir('/', 'ns', 'a')).toBe('/ns/a');
    expect(() => nodeLocalDir('/root', 'ns', '../../etc')).toThrow(/must stay under the storage root/);
    expect(() => nodeLocalDir('/root', '..', 'x')).toThrow(/metadata\.namespace/);
    expect(() => nodeLocalDir('relative', 'ns', 'x')).toThrow(/storageRoot: must be absolute/);
    expect(() => nodeLocalDir('/root', 'ns', '/etc/passwd')).toThrow(LockCheckpointError);
  });
});
