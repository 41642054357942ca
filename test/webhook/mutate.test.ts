/**
 * The restore webhook's decision, specified by applying its JSONPatch to real pod specs and
 * reading the resulting pods.
 */
import { describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { parseLockCheckpoint, type LockCheckpoint } from '../../src/api/index.js';
import { DEFAULT_WEBHOOK_CONFIG, ENV_RESTORE_FROM, decideRestore, restoreTarget, type WebhookConfig } from '../../src/webhook/mutate.js';
import { applyJsonPatch, JsonPatchError } from './jsonpatch.js';

const CFG: WebhookConfig = { ...DEFAULT_WEBHOOK_CONFIG, shimDir: '/opt/lockmig/shim', vaultSocketDir: '/run/lockmig-vault', storageRoot: '/var/lib/lockmig/checkpoints' };
const NOW = '2026-11-26T23:40:00Z';
const OPTS = { now: NOW, randomSuffix: 'x7k2q' };

function ckpt(over: { spec?: Record<string, unknown>; status?: Record<string, unknown>; namespace?: string; name?: string } = {}): LockCheckpoint {
  return parseLockCheckpoint({
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
    metadata: { name: over.name ?? 'db-move', namespace: over.namespace ?? 'prod', uid: 'c0ffee00-0000-4000-8000-000000000001', generation: 1 },
    spec: { sourcePodName: 'db-0', ...(over.spec ?? {}) },
    status: { phase: 'Dumped', nodeName: 'node-a', sourcePodUID: '6f1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d', ...(over.status ?? {}) },
  });
}

/** A StatefulSet-style database pod: command + args, env, a data volume, a user affinity. */
function dbPod(over: Partial<V1Pod['metadata']> = {}): V1Pod {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'db-1', namespace: 'prod', labels: { app: 'db' }, annotations: { 'lockmig.dev/restore-from': 'db-move' }, ...over },
    spec: {
      containers: [
        {
          name: 'db', image: 'registry.example/sqlite-server:3.45',
          command: ['/usr/local/bin/sqlite-server'], args: ['--db', '/data/app.db', '--port', '8080'],
          env: [{ name: 'TZ', value: 'UTC' }],
          volumeMounts: [{ name: 'data', mountPath: '/data' }],
          resources: { requests: { cpu: '100m', memory: '128Mi' } },
        },
        { name: 'metrics', image: 'registry.example/exporter:1', command: ['/exporter'] },
      ],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data-db-0' } }],
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              { matchExpressions: [{ key: 'topology.kubernetes.io/zone', operator: 'In', values: ['eu-1a'] }] },
              { matchExpressions: [{ key: 'disk', operator: 'In', values: ['ssd'] }], matchFields: [{ key: 'metadata.name', operator: 'NotIn', values: ['node-z'] }] },
            ],
          },
        },
      },
    },
  };
}

function admit(pod: V1Pod, cp: LockCheckpoint | undefined, cfg = CFG) {
  const d = decideRestore(pod, cp, cfg, OPTS);
  const patched = d.patch ? applyJsonPatch(pod, d.patch) : pod;
  return { d, pod: patched };
}

describe('decideRestore: a checkpoint imported from a kubelet checkpoint archive', () => {
  const source = { kubeletCheckpoint: { node: 'node-a', file: 'checkpoint-db-0_prod-db-2026-12-05T07:00:00Z.tar' } };
  const imported = (containers: string[], spec: Record<string, unknown> = {}) => parseLockCheckpoint({
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
    metadata: { name: 'db-move', namespace: 'prod', uid: 'c0ffee00-0000-4000-8000-000000000001', generation: 1 },
    spec: { source, ...spec },
    status: {
      phase: 'Dumped', nodeName: 'node-a',
      agent: { nodeName: 'node-a', state: 'Dumped', storage: 'api', containers, configMaps: [{ name: 'lockmig-db-move-0', items: [{ key: 'k0', path: `${containers[0] ?? 'db'}/manifest.json` }] }] },
    },
  });

  it('wraps only the container the agent imported the archive for (a sidecar is left alone), retaking from the ConfigMaps anywhere', () => {
    const { d, pod } = admit(dbPod(), imported(['db']));
    expect(d.allowed).toBe(true);
    const [db, metrics] = pod.spec!.containers;
    expect(db!.command).toEqual(expect.arrayContaining(['restore', '--image', '/lockmig/images/db', '--', '/usr/local/bin/sqlite-server']));
    expect(db!.command).not.toContain('--handover');
    expect(metrics!.command).toEqual(['/exporter']);
    expect(pod.spec!.volumes!.find((v) => v.name === 'lockmig-images')!.projected!.sources![0]!.configMap!.name).toBe('lockmig-db-move-0');
    // api storage: not pinned to the archive's node
    expect(JSON.stringify(pod.spec!.affinity)).not.toContain('node-a');
    expect(d.restoredPod).toMatchObject({ name: 'db-1' });
  });

  it('a restore pod without the imported container is refused, naming it', () => {
    const { d } = admit(dbPod(), imported(['postgres']));
    expect(d.allowed).toBe(false);
    expect(d.message).toContain('"postgres"');
  });

  it('spec.containers still wins (the agent stored the images under that name)', () => {
    const { pod } = admit(dbPod(), imported(['metrics'], { containers: ['metrics'] }));
    expect(pod.spec!.containers[1]!.command).toEqual(expect.arrayContaining(['--image', '/lockmig/images/metrics']));
    expect(pod.spec!.containers[0]!.command).toEqual(['/usr/local/bin/sqlite-server']);
  });
});

describe('decideRestore: wrapping a retake restore', () => {
  it('wraps only the checkpoint\'s containers and keeps the original command + args after --', () => {
    const { d, pod } = admit(dbPod(), ckpt({ spec: { containers: ['db'] } }));
    expect(d.allowed).toBe(true);
    const db = pod.spec!.containers[0]!;
    expect(db.command).toEqual([
      '/lockmig/shim/current/lib/ld.so', '--inhibit-cache', '--library-path', '/lockmig/shim/current/lib', '/lockmig/shim/current/bin/node',
      '/lockmig/shim/current/app/dist/src/cli/main.js', 'restore', '--image', '/lockmig/images/db', '--timeout', '30',
      '--allow', '/data', '--state-file', '/lockmig/state/db.json', '--', '/usr/local/bin/sqlite-server', '--db', '/data/app.db', '--port', '8080',
    ]);
    expect(db.args).toBeUndefined();
    expect(db.env).toEqual([{ name: 'TZ', value: 'UTC' }, { name: ENV_RESTORE_FROM, value: 'prod/db-move' }]);
    expect(db.volumeMounts).toEqual([
      { name: 'data', mountPath: '/data' },
      { name: 'lockmig-images', mountPath: '/lockmig/images', readOnly: true },
      { name: 'lockmig-shim', mountPath: '/lockmig/shim', readOnly: true },
      { name: 'lockmig-state', mountPath: '/lockmig/state' },
    ]);
    expect(db.resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' } });
    // the sidecar is not in spec.containers: untouched
    expect(pod.spec!.containers[1]).toEqual(dbPod().spec!.containers[1]);
    expect(pod.spec!.volumes).toEqual([
      { name: 'data', persistentVolumeClaim: { claimName: 'data-db-0' } },
      { name: 'lockmig-images', hostPath: { path: '/var/lib/lockmig/checkpoints/prod/db-move', type: 'Directory' } },
      { name: 'lockmig-shim', hostPath: { path: '/opt/lockmig/shim', type: 'Directory' } },
      { name: 'lockmig-state', emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
    ]);
    // not Ready until the agent saw the shim report its locks held
    expect(pod.spec!.readinessGates).toEqual([{ conditionType: 'lockmig.dev/locks-held' }]);
    expect(d.restoredPod).toEqual({ name: 'db-1', nodeName: 'node-a', time: NOW });
  });

  it('allows only data volumes: never the service-account token, Secrets, ConfigMaps or downward API mounts', () => {
    const p = dbPod();
    p.spec!.containers[0]!.volumeMounts!.push(
      { name: 'kube-api-access-x7k2q', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
      { name: 'tls', mountPath: '/etc/tls', readOnly: true },
      { name: 'conf', mountPath: '/etc/app' },
      { name: 'info', mountPath: '/etc/podinfo' },
      { name: 'scratch', mountPath: '/scratch' },
      { name: 'shared', mountPath: '/shared' },
    );
    p.spec!.volumes!.push(
      { name: 'kube-api-access-x7k2q', projected: { sources: [{ serviceAccountToken: { path: 'token', expirationSeconds: 3607 } }] } },
      { name: 'tls', secret: { secretName: 'db-tls' } },
      { name: 'conf', configMap: { name: 'db-conf' } },
      { name: 'info', downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }] } },
      { name: 'scratch', emptyDir: {} },
      { name: 'shared', hostPath: { path: '/srv/shared', type: 'Directory' } },
    );
    const { pod } = admit(p, ckpt({ spec: { containers: ['db'] } }));
    const cmd = pod.spec!.containers[0]!.command!;
    const allowed = cmd.flatMap((a, i) => (a === '--allow' ? [cmd[i + 1]] : []));
    expect(allowed).toEqual(['/data', '/scratch', '/shared']);
  });

  it('keeps a readiness gate the pod already has and adds lockmig\'s after it', () => {
    const p = dbPod();
    p.spec!.readinessGates = [{ conditionType: 'example.com/warm' }];
    const { pod } = admit(p, ckpt());
    expect(pod.spec!.readinessGates).toEqual([{ conditionType: 'example.com/warm' }, { conditionType: 'lockmig.dev/locks-held' }]);
  });

  it('pins to the checkpoint\'s node by ANDing metadata.name into every existing node selector term', () => {
    const { pod } = admit(dbPod(), ckpt());
    const terms = pod.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms;
    expect(terms).toHaveLength(2);
    for (const t of terms) expect(t.matchFields).toContainEqual({ key: 'metadata.name', operator: 'In', values: ['node-a'] });
    expect(terms[0]!.matchExpressions).toEqual([{ key: 'topology.kubernetes.io/zone', operator: 'In', values: ['eu-1a'] }]);
    expect(terms[1]!.matchFields).toContainEqual({ key: 'metadata.name', operator: 'NotIn', values: ['node-z'] });
    expect(pod.spec!.nodeName).toBeUndefined();
  });

  it('creates the affinity on a bare pod and wraps every container when spec.containers is empty', () => {
    const bare: V1Pod = {
      metadata: { name: 'w', namespace: 'prod', annotations: { 'lockmig.dev/restore-from': 'db-move' } },
      spec: { containers: [{ name: 'a', image: 'x', command: ['/a'] }, { name: 'b', image: 'y', command: ['/b', '-v'] }] },
    };
    const { pod } = admit(bare, ckpt());
    expect(pod.spec!.affinity).toEqual({ nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['node-a'] }] }] } } });
    expect(pod.spec!.containers.map((c) => c.command!.slice(-2))).toEqual([['--', '/a'], ['/b', '-v']]);
    expect(pod.spec!.containers.map((c) => c.command![c.command!.indexOf('--image') + 1])).toEqual(['/lockmig/images/a', '/lockmig/images/b']);
    expect(pod.spec!.containers[0]!.command).not.toContain('--allow');
  });

  it('takes a missing command from lockmig.dev/command.<container> and keeps args', () => {
    const p = dbPod({ annotations: { 'lockmig.dev/restore-from': 'db-move', 'lockmig.dev/command.db': '["/entrypoint.sh","serve"]' } });
    delete p.spec!.containers[0]!.command;
    const { d, pod } = admit(p, ckpt({ spec: { containers: ['db'] } }));
    expect(d.allowed).toBe(true);
    expect(pod.spec!.containers[0]!.command!.slice(-7)).toEqual(['--', '/entrypoint.sh', 'serve', '--db', '/data/app.db', '--port', '8080']);
  });

  it('rejects a container with no command and no annotation, saying exactly that', () => {
    const p = dbPod();
    delete p.spec!.containers[0]!.command;
    const d = decideRestore(p, ckpt({ spec: { containers: ['db'] } }), CFG, OPTS);
    expect(d.allowed).toBe(false);
    expect(d.message).toContain('container "db" has no explicit command');
    expect(d.message).toContain('lockmig.dev/command.db');
    expect(d.patch).toBeUndefined();
  });

  it.each([
    ['not JSON', '/bin/app serve', 'not valid JSON'],
    ['not an array', '"/bin/app"', 'non-empty JSON array'],
    ['an empty array', '[]', 'non-empty JSON array'],
    ['a number inside', '["/bin/app", 3]', 'non-empty JSON array'],
  ])('rejects a command annotation that is %s', (_n, value, msg) => {
    const p = dbPod({ annotations: { 'lockmig.dev/restore-from': 'db-move', 'lockmig.dev/command.db': value } });
    delete p.spec!.containers[0]!.command;
    const d = decideRestore(p, ckpt({ spec: { containers: ['db'] } }), CFG, OPTS);
    expect(d.allowed).toBe(false);
    expect(d.message).toContain(msg);
  });

  it('names a generateName pod itself so the checkpoint can record it', () => {
    const { d, pod } = admit(dbPod({ name: undefined, generateName: 'db-' }), ckpt());
    expect(pod.metadata!.name).toBe('db-x7k2q');
    expect(d.restoredPod!.name).toBe('db-x7k2q');
  });

  it('mounts a PVC subPath read-only and does not pin for PVC storage in Retake mode', () => {
    const { pod } = admit(dbPod(), ckpt({ spec: { containers: ['db'], storage: { persistentVolumeClaim: { claimName: 'ckpts', subPath: 'moves/db' } }, restore: { mode: 'Retake' } } }));
    expect(pod.spec!.volumes).toContainEqual({ name: 'lockmig-images', persistentVolumeClaim: { claimName: 'ckpts', readOnly: true } });
    expect(pod.spec!.containers[0]!.volumeMounts).toContainEqual({ name: 'lockmig-images', mountPath: '/lockmig/images', readOnly: true, subPath: 'moves/db' });
    expect(pod.spec!.affinity).toEqual(dbPod().spec!.affinity);
  });
});

describe('decideRestore: handover', () => {
  it('adds the vault socket directory and --handover/--checkpoint when the vault holds the descriptions', () => {
    const cp = ckpt({ spec: { containers: ['db'] }, status: { phase: 'HandoverReady', agent: { nodeName: 'node-a', state: 'HandoverReady', handoverSocket: '/run/lockmig-vault/agent.sock' } } });
    const { d, pod } = admit(dbPod(), cp);
    expect(d.allowed).toBe(true);
    const cmd = pod.spec!.containers[0]!.command!;
    expect(cmd.slice(cmd.indexOf('--handover'), cmd.indexOf('--state-file'))).toEqual(['--handover', '/lockmig/vault/agent.sock', '--checkpoint', 'prod/db-move.db']);
    expect(pod.spec!.volumes).toContainEqual({ name: 'lockmig-vault', hostPath: { path: '/run/lockmig-vault', type: 'Directory' } });
    expect(pod.spec!.containers[0]!.volumeMounts).toContainEqual({ name: 'lockmig-vault', mountPath: '/lockmig/vault' });
  });

  it('re-takes when the agent reports its vault lost the descriptions, even before the phase follows', () => {
    const cp = ckpt({ status: { phase: 'HandoverReady', agent: { nodeName: 'node-a', state: 'Dumped' } } });
    const { d, pod } = admit(dbPod(), cp);
    expect(d.allowed).toBe(true);
    expect(pod.spec!.containers[0]!.command).not.toContain('--handover');
  });

  it('does not hand over in Retake mode even if the vault is ready', () => {
    const cp = ckpt({ spec: { restore: { mode: 'Retake' } }, status: { phase: 'HandoverReady' } });
    const { pod } = admit(dbPod(), cp);
    expect(pod.spec!.containers[0]!.command).not.toContain('--handover');
    expect(pod.spec!.volumes!.map((v) => v.name)).not.toContain('lockmig-vault');
  });
});

describe('decideRestore: rejections', () => {
  it('allows pods without the annotation unchanged', () => {
    const p = dbPod({ annotations: {} });
    expect(decideRestore(p, undefined, CFG, OPTS)).toEqual({ allowed: true });
  });

  it.each([
    ['missing', undefined, 'LockCheckpoint "db-move" not found in namespace "prod"'],
    ['still dumping', ckpt({ status: { phase: 'Dumping' } }), 'its phase is Dumping'],
    ['pending without a phase', ckpt({ status: { phase: undefined, nodeName: undefined } }), 'its phase is not set yet'],
    ['failed', ckpt({ status: { phase: 'Failed', message: 'source pod vanished' } }), 'it failed: source pod vanished'],
    ['already restored by another pod', ckpt({ status: { phase: 'Restored', restoredPod: { name: 'db-9', time: '2026-11-26T22:00:00Z' } } }), 'already restored by pod "db-9"'],
    // a StatefulSet's next db-1: same name as the pod that restored it, which exists (its UID is known)
    ['already restored by an earlier pod of the same name', ckpt({ status: { phase: 'Restored', restoredPod: { name: 'db-1', uid: '0bad0bad-0000-4000-8000-000000000001', time: '2026-11-26T22:00:00Z' } } }), 'already restored by pod "db-1"'],
    ['being deleted', parseLockCheckpoint({ ...structuredClone(ckpt()), metadata: { ...ckpt().metadata, deletionTimestamp: NOW } }), 'being deleted'],
  ])('rejects when the checkpoint is %s', (_n, cp, msg) => {
    const d = decideRestore(dbPod(), cp, CFG, OPTS);
    expect(d.allowed).toBe(false);
    expect(d.message).toContain(msg);
    expect(d.restoredPod).toBeUndefined();
  });

  it('rejects a checkpoint in another namespace, whether named or fetched', () => {
    const d1 = decideRestore(dbPod({ annotations: { 'lockmig.dev/restore-from': 'staging/db-move' } }), ckpt(), CFG, OPTS);
    expect(d1.allowed).toBe(false);
    expect(d1.message).toContain('is in namespace "staging", but the pod is in "prod"');
    const d2 = decideRestore(dbPod(), ckpt({ namespace: 'staging' }), CFG, OPTS);
    expect(d2.allowed).toBe(false);
    expect(d2.message).toContain('not in the pod\'s namespace "prod"');
  });

  it('rejects when the pod lacks a container the checkpoint holds locks for', () => {
    const d = decideRestore(dbPod(), ckpt({ spec: { containers: ['db', 'wal'] } }), CFG, OPTS);
    expect(d.allowed).toBe(false);
    expect(d.message).toContain('container(s) "wal"');
  });

  it('rejects a pod pinned by spec.nodeName to another node', () => {
    const p = dbPod();
    p.spec!.nodeName = 'node-b';
    const d = decideRestore(p, ckpt(), CFG, OPTS);
    expect(d.allowed).toBe(false);
    expect(d.message).toContain('"node-b"');
    expect(d.message).toContain('"node-a"');
  });

  it.each(['a/b/c', '', 'Bad_Name'])('rejects a malformed annotation %j', (v) => {
    const t = restoreTarget(dbPod({ annotations: { 'lockmig.dev/restore-from': v } }), 'prod');
    expect(t.kind).toBe('invalid');
  });
});

describe('decideRestore: idempotent re-admission', () => {
  it('admitting the already-mutated pod again changes nothing and records nothing new', () => {
    const cp = ckpt({ spec: { containers: ['db'] } });
    const first = admit(dbPod(), cp);
    expect(first.d.restoredPod).toBeDefined();
    const recorded = ckpt({ spec: { containers: ['db'] }, status: { phase: 'Restored', restoredPod: first.d.restoredPod } });
    const second = decideRestore(first.pod, recorded, CFG, OPTS);
    expect(second.allowed).toBe(true);
    expect(second.patch).toBeUndefined();
    expect(second.restoredPod).toBeUndefined();
    // and even if the status write had not landed yet, nothing is wrapped twice
    const third = admit(first.pod, cp);
    expect(third.d.allowed).toBe(true);
    expect(third.pod.spec).toEqual(first.pod.spec);
  });

  it('the patch only uses paths that exist (the applier is strict like the API server)', () => {
    expect(() => applyJsonPatch({ spec: {} }, [{ op: 'add', path: '/spec/containers/0/env/-', value: 1 }])).toThrow(JsonPatchError);
    const p: V1Pod = { metadata: { name: 'n', namespace: 'prod', annotations: { 'lockmig.dev/restore-from': 'db-move' } }, spec: { containers: [{ name: 'c', command: ['/c'] }] } };
    const { d, pod } = admit(p, ckpt());
    expect(d.patch!.length).toBeGreaterThan(0);
    expect(pod.spec!.containers[0]!.env).toEqual([{ name: ENV_RESTORE_FROM, value: 'prod/db-move' }]);
  });
});
