/**
 * The CRD as the real kube-apiserver enforces it (the authority; test/api/crd.test.ts checks the
 * YAML offline): OpenAPI validation, the CEL rules (storage union, spec immutability) with their
 * messages, defaulting, pruning of unknown fields (and the Strict error), the status subresource,
 * `kubectl explain` — and, case by case, the server and the shared validator (validateSpec, used
 * by every component) accept and reject the same specs.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { DEFAULTS, GROUP, KIND, LOCK_KINDS, PLURAL, VERSION, effectiveSpec, parseLockCheckpoint, validateSpec } from '../../src/api/lockcheckpoint.js';
import { REPO_ROOT, missing } from '../helpers/env.js';
import { createTestNamespace, installCrd, kubectl, ok, startApiServer, type KubeApiServer } from '../support/envtest/index.js';

const skip = missing({ k8s: true }, 'the CRD on a real API server');
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
let api: KubeApiServer;
let custom: CustomObjectsApi;
let NS = '';
const q = () => ({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS });

type Spec = Record<string, any>;
const fullSpec = (): Spec => ({
  sourcePodName: 'db-0', sourcePodUID: '11111111-2222-3333-4444-555555555555', containers: ['db', 'sidecar'], lockKinds: ['POSIX', 'OFD'],
  storage: { persistentVolumeClaim: { claimName: 'ckpts', subPath: 'team/c1' } }, restore: { mode: 'Handover', timeoutSeconds: 10, holdSeconds: 0 },
  ttlSecondsAfterFinished: 3600,
});
const body = (name: string, spec: Spec, extra: Record<string, unknown> = {}) => ({ apiVersion: `${GROUP}/${VERSION}`, kind: KIND, metadata: { name }, spec, ...extra });

/** The server's answer to a dry-run create: undefined when accepted, else its message. */
async function serverSays(spec: Spec): Promise<string | undefined> {
  try {
    await custom.createNamespacedCustomObject({ ...q(), body: body(`c-${Math.random().toString(16).slice(2, 8)}`, spec), dryRun: 'All' });
    return undefined;
  } catch (e) {
    const b = (e as { body?: string }).body;
    return b ? (JSON.parse(b) as { message: string }).message : String(e);
  }
}

const UNION = 'exactly one of storage.api, storage.nodeLocal or storage.persistentVolumeClaim must be set';
/** the CEL rules of a kubelet checkpoint source (spec.source) */
const SOURCE = {
  one: 'exactly one of spec.sourcePodName or spec.source must be set',
  uid: 'spec.sourcePodUID pins a source pod; a kubelet checkpoint source has none',
  containers: 'with a kubelet checkpoint source, spec.containers names at most one container (an archive holds one)',
  pvc: "storage.persistentVolumeClaim is written through the source pod's mount; a kubelet checkpoint source uses storage.api or storage.nodeLocal",
  handover: 'restore.mode Handover needs a running source pod; a kubelet checkpoint source restores with Auto or Retake',
  target: 'a kubelet checkpoint source has no source pod to match replacements of; its restore pod names it (target.policy Annotated)',
  nameMax: 'a file name is at most 255 bytes (NAME_MAX)',
};
const FILE = 'checkpoint-db-0_shop-db-2026-12-05T07:00:00Z.tar';
/** turns the full spec into a valid kubelet checkpoint spec (keeping what an archive allows) */
const toArchive = (s: Spec, kc: Record<string, unknown> = {}): void => {
  delete s.sourcePodName; delete s.sourcePodUID;
  s.containers = ['db']; s.storage = { nodeLocal: { path: 'forensics' } }; s.restore.mode = 'Retake';
  s.source = { kubeletCheckpoint: { node: 'worker-1', file: FILE, ...kc } };
};
const IMMUTABLE = 'spec is immutable; delete the LockCheckpoint and create a new one to change it';

/** [what, change to a valid spec, the server's message (undefined: accepted)] */
const cases: [string, (s: Spec) => void, string | undefined][] = [
  ['a fully populated spec', () => undefined, undefined],
  ['only sourcePodName (everything else defaulted)', (s) => { for (const k of Object.keys(s)) if (k !== 'sourcePodName') delete s[k]; }, undefined],
  ['nodeLocal storage with a nested relative path', (s) => { s.storage = { nodeLocal: { path: 'team/db-move' } }; }, undefined],
  ['api storage that must not fall back', (s) => { s.storage = { api: { fallback: 'None' } }; }, undefined],
  ['an unknown api storage fallback', (s) => { s.storage = { api: { fallback: 'Drop' } }; }, 'spec.storage.api.fallback: Unsupported value: "Drop"'],
  ['target policy SameName (a StatefulSet replacement)', (s) => { s.target = { policy: 'SameName' }; }, undefined],
  ['an unknown target policy', (s) => { s.target = { policy: 'Any' }; }, 'spec.target.policy: Unsupported value: "Any"'],
  ['no sourcePodName', (s) => { delete s.sourcePodName; }, SOURCE.one],
  ['a pod name that is no DNS-1123 subdomain', (s) => { s.sourcePodName = 'DB_0'; }, 'spec.sourcePodName in body should match'],
  ['a UID pin that is no UID', (s) => { s.sourcePodUID = 'xyz'; }, 'spec.sourcePodUID in body should match'],
  ['a lock kind outside the enum', (s) => { s.lockKinds = ['POSIX', 'FCNTL']; }, 'spec.lockKinds[1]: Unsupported value: "FCNTL"'],
  ['no lock kind at all', (s) => { s.lockKinds = []; }, 'spec.lockKinds: Invalid value: 0: spec.lockKinds in body should have at least 1 items'],
  ['duplicate containers', (s) => { s.containers = ['db', 'db']; }, 'spec.containers[1]: Duplicate value: "db"'],
  ['65 containers', (s) => { s.containers = Array.from({ length: 65 }, (_, i) => `c${i}`); }, 'spec.containers: Too many: 65: must have at most 64 items'],
  ['an absolute subPath', (s) => { s.storage.persistentVolumeClaim.subPath = '/etc'; }, 'spec.storage.persistentVolumeClaim.subPath in body should match'],
  ['a subPath climbing out with ..', (s) => { s.storage.persistentVolumeClaim.subPath = 'a/../../b'; }, 'spec.storage.persistentVolumeClaim.subPath in body should match'],
  ['a nodeLocal path of "."', (s) => { s.storage = { nodeLocal: { path: '.' } }; }, 'spec.storage.nodeLocal.path in body should match'],
  ['a PVC without claimName', (s) => { s.storage = { persistentVolumeClaim: { subPath: 'x' } }; }, 'spec.storage.persistentVolumeClaim.claimName: Required value'],
  ['both storage members', (s) => { s.storage.nodeLocal = { path: 'x' }; }, UNION],
  ['neither storage member', (s) => { s.storage = {}; }, UNION],
  ['api and nodeLocal storage', (s) => { s.storage = { api: {}, nodeLocal: {} }; }, UNION],
  ['an unknown restore mode', (s) => { s.restore.mode = 'Teleport'; }, 'spec.restore.mode: Unsupported value: "Teleport"'],
  ['timeoutSeconds 0', (s) => { s.restore.timeoutSeconds = 0; }, 'spec.restore.timeoutSeconds: Invalid value: 0: spec.restore.timeoutSeconds in body should be greater than or equal to 1'],
  ['holdSeconds above a day', (s) => { s.restore.holdSeconds = 86401; }, 'spec.restore.holdSeconds in body should be less than or equal to 86400'],
  ['a negative ttlSecondsAfterFinished', (s) => { s.ttlSecondsAfterFinished = -1; }, 'spec.ttlSecondsAfterFinished in body should be greater than or equal to 0'],
  // a kubelet checkpoint archive as the source (spec.source.kubeletCheckpoint)
  ['a kubelet checkpoint source instead of a pod', (s) => toArchive(s), undefined],
  ['a kubelet checkpoint source with only node and file', (s) => { for (const k of Object.keys(s)) delete s[k]; s.source = { kubeletCheckpoint: { node: 'worker-1', file: FILE } }; }, undefined],
  ['an archive name with colons, a plus and a leading dot', (s) => toArchive(s, { file: '.checkpoint-a_b-c-2026-01-01T00:00:00+01:00.tar.zst' }), undefined],
  ['an archive name of 127 two-byte characters (254 bytes)', (s) => toArchive(s, { file: 'é'.repeat(127) }), undefined],
  ['an archive name of 128 two-byte characters (256 bytes)', (s) => toArchive(s, { file: 'é'.repeat(128) }), SOURCE.nameMax],
  ['both a pod and a source', (s) => { toArchive(s); s.sourcePodName = 'db-0'; }, SOURCE.one],
  ['neither a pod nor a source', (s) => { toArchive(s); delete s.source; }, SOURCE.one],
  ['a source without kubeletCheckpoint', (s) => { toArchive(s); s.source = {}; }, 'spec.source.kubeletCheckpoint: Required value'],
  ['a kubeletCheckpoint without file', (s) => { toArchive(s); delete s.source.kubeletCheckpoint.file; }, 'spec.source.kubeletCheckpoint.file: Required value'],
  ['a kubeletCheckpoint without node', (s) => { toArchive(s); delete s.source.kubeletCheckpoint.node; }, 'spec.source.kubeletCheckpoint.node: Required value'],
  ['a node name that is no DNS-1123 subdomain', (s) => toArchive(s, { node: 'Worker_1' }), 'spec.source.kubeletCheckpoint.node in body should match'],
  ['an archive file name with a slash', (s) => toArchive(s, { file: 'sub/x.tar' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['an absolute archive path', (s) => toArchive(s, { file: '/etc/shadow' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['an archive path climbing out', (s) => toArchive(s, { file: '../../etc/shadow' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['an archive named ".."', (s) => toArchive(s, { file: '..' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['an archive named "."', (s) => toArchive(s, { file: '.' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['an archive name with NUL', (s) => toArchive(s, { file: 'a\u0000.tar' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['an archive name with a backslash', (s) => toArchive(s, { file: 'a\\b.tar' }), 'spec.source.kubeletCheckpoint.file in body should match'],
  ['a kubelet checkpoint source with a UID pin', (s) => { toArchive(s); s.sourcePodUID = '11111111-2222-3333-4444-555555555555'; }, SOURCE.uid],
  ['a kubelet checkpoint source with two containers', (s) => { toArchive(s); s.containers = ['db', 'sidecar']; }, SOURCE.containers],
  ['a kubelet checkpoint source into a PVC', (s) => { toArchive(s); s.storage = { persistentVolumeClaim: { claimName: 'ckpts' } }; }, SOURCE.pvc],
  ['a kubelet checkpoint source with restore mode Handover', (s) => { toArchive(s); s.restore.mode = 'Handover'; }, SOURCE.handover],
  ['a kubelet checkpoint source with target policy SameName', (s) => { toArchive(s); s.target = { policy: 'SameName' }; }, SOURCE.target],
  ['a kubelet checkpoint source with target policy Workload', (s) => { toArchive(s); s.target = { policy: 'Workload' }; }, SOURCE.target],
];

beforeAll(async () => {
  if (skip) return;
  api = await startApiServer();
  await installCrd(api);
  custom = api.kubeConfig.makeApiClient(CustomObjectsApi);
  NS = (await createTestNamespace(api.kubeConfig, { prefix: 'crd' })).name;
}, 120_000);
afterAll(async () => {
  await api?.stop();
});

describe.skipIf(skip)('the CRD on a real API server', () => {
  it.each(cases)('%s: the server says what it should, and validateSpec agrees', async (_what, change, expected) => {
    const spec = fullSpec();
    change(spec);
    const said = await serverSays(spec);
    if (expected === undefined) expect(said).toBeUndefined();
    else expect(said).toContain(expected);
    expect(validateSpec(spec).length === 0, `validateSpec: ${JSON.stringify(validateSpec(spec))}`).toBe(said === undefined);
  });

  it('every CEL rule of the CRD is exercised here with its message', () => {
    const crd = YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml'), 'utf8'));
    const messages: string[] = [];
    const walk = (s: Record<string, any>) => {
      for (const r of s['x-kubernetes-validations'] ?? []) messages.push(r.message);
      for (const sub of Object.values(s.properties ?? {})) walk(sub as Record<string, any>);
      if (s.items) walk(s.items);
    };
    walk(crd.spec.versions[0].schema.openAPIV3Schema);
    expect(messages.sort()).toEqual([UNION, IMMUTABLE, ...Object.values(SOURCE)].sort());
  });

  it('applies the defaults the components assume (all lock kinds, api storage falling back to NodeLocal, restore Auto/30/300, target Annotated)', async () => {
    const o = (await custom.createNamespacedCustomObject({ ...q(), body: body('defaults', { sourcePodName: 'p' }) })) as { spec: Spec };
    expect(o.spec).toEqual({
      sourcePodName: 'p', lockKinds: [...LOCK_KINDS], storage: { api: { fallback: 'NodeLocal' } },
      restore: { mode: DEFAULTS.restoreMode, timeoutSeconds: DEFAULTS.timeoutSeconds, holdSeconds: DEFAULTS.holdSeconds },
      target: { policy: 'Annotated' },
    });
    // and the shared parser, which every component uses on what the server stored, agrees
    const parsed = parseLockCheckpoint({ ...o, apiVersion: `${GROUP}/${VERSION}`, kind: KIND, metadata: { name: 'defaults', namespace: NS } });
    expect(effectiveSpec(parsed.spec, 'defaults')).toMatchObject({ storage: { kind: 'api', fallback: 'NodeLocal' }, target: { policy: 'Annotated' } });
  });

  it('the spec is immutable, while labels, finalizers and status still change', async () => {
    await custom.createNamespacedCustomObject({ ...q(), body: body('immut', fullSpec()) });
    const err = await custom.patchNamespacedCustomObject({ ...q(), name: 'immut', body: { spec: { sourcePodName: 'db-1' } } }, merge).then(() => undefined, (e: { code?: number; body?: string }) => e);
    expect(err?.code).toBe(422);
    expect(JSON.parse(err!.body!).message).toContain(`spec: Invalid value: "object": ${IMMUTABLE}`);
    await custom.patchNamespacedCustomObject({ ...q(), name: 'immut', body: { metadata: { labels: { a: 'b' }, finalizers: ['lockmig.dev/test'] } } }, merge);
    await custom.patchNamespacedCustomObjectStatus({ ...q(), name: 'immut', body: { status: { phase: 'Dumped' } } }, merge);
    const o = (await custom.getNamespacedCustomObject({ ...q(), name: 'immut' })) as { metadata: { labels: Record<string, string>; generation: number }; status: { phase: string }; spec: Spec };
    expect(o.metadata.labels).toEqual({ a: 'b' });
    expect(o.status.phase).toBe('Dumped');
    expect(o.spec.sourcePodName).toBe('db-0');
    expect(o.metadata.generation).toBe(1);
    await custom.patchNamespacedCustomObject({ ...q(), name: 'immut', body: { metadata: { finalizers: null } } }, merge);
  });

  it('status is a subresource: ignored on create and on main writes; its own schema is enforced', async () => {
    const created = (await custom.createNamespacedCustomObject({ ...q(), body: body('st', { sourcePodName: 'p' }, { status: { phase: 'Restored' } }) })) as { status?: unknown };
    expect(created.status).toBeUndefined();
    await custom.patchNamespacedCustomObject({ ...q(), name: 'st', body: { status: { phase: 'Failed' } } }, merge);
    expect(((await custom.getNamespacedCustomObject({ ...q(), name: 'st' })) as { status?: unknown }).status).toBeUndefined();
    const bad = await custom.patchNamespacedCustomObjectStatus({ ...q(), name: 'st', body: { status: { phase: 'Done', locks: { total: -1 } } } }, merge).then(() => undefined, (e: { code?: number; body?: string }) => e);
    expect(bad?.code).toBe(422);
    const msg = JSON.parse(bad!.body!).message as string;
    expect(msg).toContain('status.phase: Unsupported value: "Done"');
    expect(msg).toContain('status.locks.total: Invalid value: -1: locks.total in body should be greater than or equal to 0');
    // a status write cannot change the spec either
    await custom.patchNamespacedCustomObjectStatus({ ...q(), name: 'st', body: { spec: { sourcePodName: 'other' }, status: { phase: 'Pending' } } }, merge);
    const after = (await custom.getNamespacedCustomObject({ ...q(), name: 'st' })) as { spec: Spec; status: { phase: string } };
    expect(after.spec.sourcePodName).toBe('p');
    expect(after.status.phase).toBe('Pending');
  });

  it('prunes unknown fields (with a warning), and refuses them under fieldValidation=Strict', async () => {
    const o = (await custom.createNamespacedCustomObject({ ...q(), body: body('pruned', { sourcePodName: 'p', bogus: 1, restore: { mode: 'Retake', speed: 'fast' } }) })) as { spec: Spec };
    expect(o.spec.bogus).toBeUndefined();
    expect(o.spec.restore).toEqual({ mode: 'Retake', timeoutSeconds: 30, holdSeconds: 300 });
    const strict = await custom.createNamespacedCustomObject({ ...q(), body: body('strict', { sourcePodName: 'p', bogus: 1 }), fieldValidation: 'Strict' }).then(() => undefined, (e: { code?: number; body?: string }) => e);
    expect(strict?.code).toBe(400);
    expect(JSON.parse(strict!.body!).message).toContain('unknown field "spec.bogus"');
    // kubectl users see the warning on a lenient write
    const r = await kubectl(['create', '--validate=warn', '-n', NS, '-f', '-'], {
      kubeconfig: api.kubeconfigPath, input: JSON.stringify(body('warned', { sourcePodName: 'p', bogus: 1 })),
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('unknown field "spec.bogus"');
  });

  it('kubectl explain shows the schema descriptions (the CRD is published in OpenAPI)', async () => {
    let out = '';
    for (let i = 0; i < 50 && !out.includes('Auto hands over'); i++) {
      const r = await kubectl(['explain', 'lockcheckpoint.spec.restore.mode'], { kubeconfig: api.kubeconfigPath });
      out = r.stdout;
      if (!out.includes('Auto hands over')) await new Promise((res) => setTimeout(res, 200));
    }
    expect(out).toContain('Auto hands over OFD and flock descriptions');
    expect(ok(await kubectl(['api-resources', '--api-group', GROUP, '-o', 'wide'], { kubeconfig: api.kubeconfigPath }), 'api-resources')).toMatch(/lockcheckpoints\s+lckpt,lckpts\s+lockmig\.dev\/v1alpha1\s+true\s+LockCheckpoint\s+\S+\s+lockmig,all/);
  });

  it('a kubelet checkpoint source: kubectl explain describes it, and kubectl get -o wide shows its archive (Source stays empty)', async () => {
    // the CRD's OpenAPI is published a moment after it is Established
    let explain = '';
    for (let i = 0; i < 50 && !explain.includes('KEP-2008'); i++) {
      explain = (await kubectl(['explain', 'lockcheckpoint.spec.source.kubeletCheckpoint'], { kubeconfig: api.kubeconfigPath })).stdout;
      if (!explain.includes('KEP-2008')) await new Promise((res) => setTimeout(res, 200));
    }
    expect(explain).toContain('KEP-2008');
    expect(explain).toMatch(/file\s+<string> -required-/);
    expect(explain).toMatch(/node\s+<string> -required-/);
    const file = ok(await kubectl(['explain', 'lockcheckpoint.spec.source.kubeletCheckpoint.file'], { kubeconfig: api.kubeconfigPath }), 'explain file');
    expect(file).toContain("File name of the archive in the kubelet's checkpoint directory");
    expect(ok(await kubectl(['explain', 'lockcheckpoint.spec'], { kubeconfig: api.kubeconfigPath }), 'explain spec')).toMatch(/exactly one of\s+them/);

    await custom.createNamespacedCustomObject({ ...q(), body: body('from-kubelet', { source: { kubeletCheckpoint: { node: 'worker-1', file: FILE } } }) });
    const wide = ok(await kubectl(['get', 'lckpt', 'from-kubelet', '-n', NS, '-o', 'wide'], { kubeconfig: api.kubeconfigPath }), 'get -o wide');
    const [head, row] = wide.trim().split('\n');
    expect(head!.split(/\s+/)).toEqual(['NAME', 'PHASE', 'SOURCE', 'NODE', 'TARGET', 'LOCKS', 'ARCHIVE', 'REASON', 'AGE']);
    // cells by the header's column offsets: no phase, pod, node, target or lock count yet (no controller here)
    const names = head!.split(/\s+/);
    const starts = names.map((n) => head!.indexOf(n));
    const cell = Object.fromEntries(names.map((n, i) => [n, row!.slice(starts[i], starts[i + 1] ?? row!.length).trim()]));
    expect(cell).toMatchObject({ NAME: 'from-kubelet', PHASE: '', SOURCE: '', NODE: '', TARGET: '', LOCKS: '', ARCHIVE: FILE, REASON: '' });
  });
});
