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

describe('validateSpec: a kubelet checkpoint source (spec.source.kubeletCheckpoint)', () => {
  const file = 'checkpoint-db-0_shop-db-2026-12-05T07:00:00Z.tar';
  const src = { source: { kubeletCheckpoint: { node: 'worker-1', file } } };

  it('accepts an archive instead of a pod, with what makes sense without one', () => {
    expect(validateSpec(src)).toEqual([]);
    expect(validateSpec({
      ...src, containers: ['db'], lockKinds: ['POSIX', 'OFD'], storage: { nodeLocal: { path: 'forensics/db' } },
      restore: { mode: 'Retake', timeoutSeconds: 5 }, target: { policy: 'Annotated' }, ttlSecondsAfterFinished: 60,
    })).toEqual([]);
    // names the kubelet writes: colons, dots, a leading dot followed by more
    for (const f of ['a', 'x.tar.zst', '..hidden', '.tar', 'checkpoint-a_b-c-2026-01-01T00:00:00+01:00.tar', 'é'.repeat(127)]) {
      expect(validateSpec({ source: { kubeletCheckpoint: { node: 'n', file: f } } }), f).toEqual([]);
    }
    const eff = effectiveSpec({ source: { kubeletCheckpoint: { node: 'worker-1', file } } }, 'fx');
    expect(eff.kubeletCheckpoint).toEqual({ node: 'worker-1', file });
    expect(eff.sourcePodName).toBeUndefined();
    expect(eff.storage).toEqual({ kind: 'api', fallback: 'NodeLocal', path: 'fx' });
  });

  const kc = (k: Record<string, unknown>) => ({ source: { kubeletCheckpoint: { node: 'worker-1', file, ...k } } });
  const cases: [string, unknown, string, RegExp][] = [
    ['neither a pod nor a source', {}, 'spec.sourcePodName', /is required \(or spec\.source: exactly one of sourcePodName or source/],
    ['both a pod and a source', { sourcePodName: 'db-0', ...src }, 'spec', /exactly one of sourcePodName or source must be set, not both/],
    ['a source that is not an object', { source: 'x.tar' }, 'spec.source', /must be an object/],
    ['a source without kubeletCheckpoint', { source: {} }, 'spec.source.kubeletCheckpoint', /is required/],
    ['an unknown source kind', { source: { podmanArchive: {}, kubeletCheckpoint: { node: 'n', file } } }, 'spec.source.podmanArchive', /unknown field/],
    ['an unknown kubeletCheckpoint field', kc({ path: '/x' }), 'spec.source.kubeletCheckpoint.path', /unknown field/],
    ['no node', kc({ node: undefined }), 'spec.source.kubeletCheckpoint.node', /is required/],
    ['a node name that is no DNS-1123 subdomain', kc({ node: 'Worker_1' }), 'spec.source.kubeletCheckpoint.node', /node name \(DNS-1123 subdomain\)/],
    ['no file', kc({ file: '' }), 'spec.source.kubeletCheckpoint.file', /is required/],
    ['a file name with a slash', kc({ file: 'sub/x.tar' }), 'spec.source.kubeletCheckpoint.file', /not a path \("sub\/x\.tar" contains "\/"\)/],
    ['an absolute path', kc({ file: '/etc/shadow' }), 'spec.source.kubeletCheckpoint.file', /not a path/],
    ['a path climbing out', kc({ file: '../../../etc/shadow' }), 'spec.source.kubeletCheckpoint.file', /not a path/],
    ['".."', kc({ file: '..' }), 'spec.source.kubeletCheckpoint.file', /must be a file name, not "\.\."/],
    ['"."', kc({ file: '.' }), 'spec.source.kubeletCheckpoint.file', /must be a file name, not "\."/],
    ['a NUL byte', kc({ file: 'x\u0000.tar' }), 'spec.source.kubeletCheckpoint.file', /NUL/],
    ['a backslash', kc({ file: 'a\\b' }), 'spec.source.kubeletCheckpoint.file', /backslash/],
    ['a name over NAME_MAX bytes', kc({ file: 'é'.repeat(128) }), 'spec.source.kubeletCheckpoint.file', /at most 255 bytes/],
    ['a UID pin', { ...src, sourcePodUID: '11111111-2222-3333-4444-555555555555' }, 'spec.sourcePodUID', /pins a source pod; a kubelet checkpoint source has no running pod/],
    ['two containers', { ...src, containers: ['a', 'b'] }, 'spec.containers', /at most one container/],
    ['pvc storage', { ...src, storage: { persistentVolumeClaim: { claimName: 'c' } } }, 'spec.storage.persistentVolumeClaim', /source pod's own mount/],
    ['restore mode Handover', { ...src, restore: { mode: 'Handover' } }, 'spec.restore.mode', /Handover takes open file descriptions from running processes/],
    ['target policy SameName', { ...src, target: { policy: 'SameName' } }, 'spec.target.policy', /SameName matches replacements of the source pod/],
    ['target policy Workload', { ...src, target: { policy: 'Workload' } }, 'spec.target.policy', /lockmig\.dev\/restore-from annotation/],
  ];
  it.each(cases)('%s → error at %s', (_n, spec, field, msg) => {
    const errs = validateSpec(spec);
    const e = errs.find((x) => x.field === field);
    expect(e, JSON.stringify(errs)).toBeDefined();
    expect(e?.message).toMatch(msg);
  });

  it('parseLockCheckpoint keeps the source; a status.agent.containers that is not a list of names is refused', () => {
    const cp = parseLockCheckpoint({ metadata: { name: 'fx', namespace: 'shop' }, spec: src, status: { agent: { nodeName: 'worker-1', state: 'Dumped', containers: ['db'] } } });
    expect(cp.spec.source?.kubeletCheckpoint?.file).toBe(file);
    expect(cp.status?.agent?.containers).toEqual(['db']);
    expect(validateStatus({ agent: { nodeName: 'n', state: 'Dumped', containers: ['../x'] } })).toEqual([{ field: 'status.agent.containers', message: 'must be a list of container names' }]);
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
