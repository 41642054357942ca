/**
 * `kubectl lockmig checkpoint | status | inspect | migrate`: LockCheckpoints through the API with
 * the caller's credentials (docs/api.md for the object, docs/migration.md for target policies).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { V1ConfigMap, V1Pod } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type LockCheckpoint, type RestoreMode } from '../../api/index.js';
import { stopCheckpoint, stopCheckpointName } from '../../webhook/stop.js';
import { loadCheckpoint } from '../../image/input.js';
import type { Checkpoint } from '../../image/index.js';
import { CliError, EXIT } from '../args.js';
import { apiMessage, statusOf, type Cluster } from './kube.js';
import { table } from './locks.js';

export interface Progress {
  /** one line of progress (stderr) */
  line(text: string): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function getCheckpoint(c: Cluster, namespace: string, name: string): Promise<LockCheckpoint | undefined> {
  try {
    return (await c.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, name })) as LockCheckpoint;
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw new CliError(`cannot read LockCheckpoint ${namespace}/${name}: ${apiMessage(err)}`, EXIT.FAILURE);
  }
}

export async function readPod(c: Cluster, namespace: string, name: string): Promise<V1Pod> {
  try {
    return await c.core.readNamespacedPod({ namespace, name });
  } catch (err) {
    if (statusOf(err) === 404) throw new CliError(`pod "${name}" not found in namespace "${namespace}"`, EXIT.FAILURE);
    throw new CliError(`cannot read pod ${namespace}/${name}: ${apiMessage(err)}`, EXIT.FAILURE);
  }
}

function lockSummary(cp: LockCheckpoint): string {
  const l = cp.status?.locks;
  if (!l) return '';
  const parts = (['posix', 'ofd', 'flock', 'lease'] as const).filter((k) => l[k] > 0).map((k) => `${k === 'ofd' ? 'OFD' : k.toUpperCase()} ${l[k]}`);
  return `${l.total} lock(s)${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

/** One line describing where a checkpoint stands. */
export function describePhase(cp: LockCheckpoint): string {
  const st = cp.status;
  const p = st?.phase ?? 'Pending';
  switch (p) {
    case 'Pending': return 'Pending: waiting for the controller';
    case 'Dumping': return `Dumping: the agent on ${st?.nodeName ?? '?'} reads the locks of pod ${cp.spec.sourcePodName}`;
    case 'Dumped': return `Dumped: ${lockSummary(cp)} recorded on ${st?.nodeName ?? '?'}`;
    case 'HandoverReady': return `HandoverReady: ${lockSummary(cp)} recorded; the agent on ${st?.nodeName ?? '?'} holds the OFD/flock descriptions for the replacement`;
    case 'Restoring': return `Restoring: pod ${st?.restoredPod?.name ?? '?'}${st?.restoredPod?.nodeName ? ` on ${st.restoredPod.nodeName}` : ''} takes the locks`;
    case 'Restored': return `Restored: ${st?.restore?.message ?? `pod ${st?.restoredPod?.name ?? '?'} holds the locks`}`;
    case 'Failed': return `Failed: ${st?.message ?? (st?.conditions ?? []).find((x) => x.status === 'False')?.message ?? 'no message'}`;
  }
}

/**
 * Poll the checkpoint until `done(phase)`; a progress line on each change. Returns the last object.
 * Throws CliError on Failed (exit 1) and on timeout (exit 1).
 */
export async function waitFor(c: Cluster, ns: string, name: string, done: (cp: LockCheckpoint) => boolean, progress: Progress, timeoutMs: number, t0 = Date.now(), seen: { last: string } = { last: '' }): Promise<LockCheckpoint> {
  const deadline = Date.now() + timeoutMs;
  let last = seen.last;
  for (;;) {
    const cp = await getCheckpoint(c, ns, name);
    if (cp) {
      const d = describePhase(cp);
      if (d !== last) { progress.line(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${ns}/${name} ${d}`); last = d; seen.last = d; }
      if (cp.status?.phase === 'Failed') throw new CliError(`LockCheckpoint ${ns}/${name} failed: ${cp.status.message ?? 'see kubectl describe lckpt'}`, EXIT.FAILURE);
      if (done(cp)) return cp;
    }
    if (Date.now() > deadline) throw new CliError(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for LockCheckpoint ${ns}/${name} (last: ${last || 'not found'}); it keeps going: kubectl lockmig status ${name} -n ${ns}`, EXIT.FAILURE);
    await sleep(400);
  }
}

const recorded = (cp: LockCheckpoint) => ['Dumped', 'HandoverReady', 'Restoring', 'Restored'].includes(cp.status?.phase ?? '');

export async function createCheckpoint(c: Cluster, ns: string, podName: string, o: { mode?: RestoreMode; name?: string }): Promise<LockCheckpoint> {
  const pod = await readPod(c, ns, podName);
  if (!pod.spec?.nodeName || pod.status?.phase !== 'Running') throw new CliError(`pod ${ns}/${podName} is ${pod.status?.phase ?? 'not running'}${pod.spec?.nodeName ? '' : ' (not scheduled)'}: it holds no locks to checkpoint`, EXIT.FAILURE);
  const body = {
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
    metadata: { namespace: ns, ...(o.name ? { name: o.name } : { generateName: `${podName.slice(0, 50)}-` }), labels: { 'app.kubernetes.io/managed-by': 'kubectl-lockmig' } },
    spec: { sourcePodName: podName, sourcePodUID: pod.metadata!.uid!, ...(o.mode ? { restore: { mode: o.mode } } : {}) },
  };
  try {
    return (await c.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, body })) as LockCheckpoint;
  } catch (err) {
    throw new CliError(`cannot create the LockCheckpoint: ${apiMessage(err)}`, EXIT.FAILURE);
  }
}

export async function checkpointCmd(c: Cluster, ns: string, podName: string, o: { mode?: RestoreMode; wait: boolean; timeoutMs: number; name?: string }, progress: Progress): Promise<{ cp: LockCheckpoint; final: string }> {
  const t0 = Date.now();
  const cp = await createCheckpoint(c, ns, podName, o);
  const name = cp.metadata.name;
  if (o.wait) progress.line(`lockcheckpoint.lockmig.dev/${name} created`);
  if (!o.wait) return { cp, final: `lockcheckpoint.lockmig.dev/${name} created (follow it: kubectl lockmig status ${name} -n ${ns})` };
  const done = await waitFor(c, ns, name, recorded, progress, o.timeoutMs, t0);
  return { cp: done, final: `checkpointed ${ns}/${podName}: ${lockSummary(done) || '0 locks'} in ${ns}/${name} (${((Date.now() - t0) / 1000).toFixed(1)}s); restore with a pod annotated lockmig.dev/restore-from: ${name}` };
}

function age(ts: string | Date | undefined, now = Date.now()): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((now - new Date(ts).getTime()) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** `kubectl get lckpt`'s columns (and, for one checkpoint, its conditions). */
export function renderStatus(list: readonly LockCheckpoint[], o: { showNamespace: boolean; wide?: boolean; conditions?: boolean }): string {
  const rows: string[][] = [[...(o.showNamespace ? ['NAMESPACE'] : []), 'NAME', 'PHASE', 'SOURCE', 'NODE', 'TARGET', 'LOCKS', ...(o.wide ? ['STORAGE', 'WINDOW-MS', 'REASON'] : []), 'AGE']];
  for (const cp of list) {
    const st = cp.status;
    const ready = (st?.conditions ?? []).find((x) => x.type === 'Ready');
    rows.push([
      ...(o.showNamespace ? [cp.metadata.namespace] : []), cp.metadata.name, st?.phase ?? 'Pending', cp.spec.sourcePodName ?? (cp.spec.source?.kubeletCheckpoint ? `archive:${cp.spec.source.kubeletCheckpoint.file}` : ''), st?.nodeName ?? '', st?.restoredPod?.name ?? '',
      st?.locks ? String(st.locks.total) : '', ...(o.wide ? [st?.agent?.storage ?? '', st?.restore?.windowMilliseconds !== undefined ? String(st.restore.windowMilliseconds) : '', ready?.reason ?? ''] : []),
      age(cp.metadata.creationTimestamp),
    ]);
  }
  let out = `${table(rows)}\n`;
  if (o.conditions && list.length === 1) {
    const cp = list[0]!;
    const conds = cp.status?.conditions ?? [];
    out += `\nConditions:\n${conds.length ? table([['TYPE', 'STATUS', 'REASON', 'AGE', 'MESSAGE'], ...conds.map((x) => [x.type, x.status, x.reason, age(x.lastTransitionTime), x.message])]).replace(/^/gm, '  ') : '  <none>'}\n`;
    if (cp.status?.message) out += `\nMessage: ${cp.status.message}\n`;
  }
  return out;
}

export async function listCheckpoints(c: Cluster, ns: string | undefined): Promise<LockCheckpoint[]> {
  try {
    const r = ns
      ? await c.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL })
      : await c.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL });
    return ((r as { items: LockCheckpoint[] }).items).sort((a, b) => a.metadata.namespace.localeCompare(b.metadata.namespace) || String(a.metadata.creationTimestamp).localeCompare(String(b.metadata.creationTimestamp)));
  } catch (err) {
    throw new CliError(`cannot list LockCheckpoints${ns ? ` in namespace ${ns}` : ''}: ${apiMessage(err)}`, EXIT.FAILURE);
  }
}

/**
 * The images of an api-storage checkpoint, from its ConfigMaps, as lockmig checkpoint directories
 * (`<tmp>/<container>/`), read and validated with the same code as `lockmig inspect`.
 */
export async function fetchImages(c: Cluster, cp: LockCheckpoint): Promise<{ container: string; checkpoint: Checkpoint }[]> {
  const ns = cp.metadata.namespace;
  const agent = cp.status?.agent;
  const storage = agent?.storage;
  if (storage !== 'api' || !agent?.configMaps?.length) {
    const where = cp.status?.imageLocation ?? '(unknown)';
    throw new CliError(`LockCheckpoint ${ns}/${cp.metadata.name} has ${storage ? `${storage} storage` : 'no images yet'}${cp.status?.phase ? ` (phase ${cp.status.phase})` : ''}: `
      + (storage ? `its images are at ${where}${cp.status?.nodeName ? ` on node ${cp.status.nodeName}` : ''}; run \`lockmig inspect\` there` : 'wait for phase Dumped'), EXIT.FAILURE);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubectl-lockmig-'));
  try {
    const containers = new Set<string>();
    for (const ref of agent.configMaps) {
      let cm: V1ConfigMap;
      try {
        cm = await c.core.readNamespacedConfigMap({ namespace: ns, name: ref.name });
      } catch (err) {
        throw new CliError(`cannot read ConfigMap ${ns}/${ref.name} of the checkpoint's images: ${apiMessage(err)}`, EXIT.FAILURE);
      }
      for (const item of ref.items) {
        const data = cm.binaryData?.[item.key];
        if (data === undefined) throw new CliError(`ConfigMap ${ns}/${ref.name} lacks key ${item.key} (the images are incomplete)`, EXIT.BAD_IMAGE);
        const rel = path.normalize(item.path);
        if (rel.startsWith('..') || path.isAbsolute(rel) || rel.split(path.sep).length !== 2) throw new CliError(`ConfigMap ${ns}/${ref.name}: bad item path ${JSON.stringify(item.path)}`, EXIT.BAD_IMAGE);
        containers.add(rel.split(path.sep)[0]!);
        fs.mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true });
        fs.writeFileSync(path.join(dir, rel), Buffer.from(data, 'base64'));
      }
    }
    const out: { container: string; checkpoint: Checkpoint }[] = [];
    for (const ct of [...containers].sort()) {
      try {
        out.push({ container: ct, checkpoint: await loadCheckpoint(path.join(dir, ct)) });
      } catch (err) {
        throw new CliError(`the images of container ${ct} are invalid: ${(err as Error).message}`, EXIT.BAD_IMAGE);
      }
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * migrate: the checkpoint the stop webhook would make (same name, target policy Workload for a
 * pod with a controller), created first so it is recorded before the pod stops whether or not the
 * pod opted in; then the pod is deleted and its controller's replacement restores the locks.
 */
export async function migrateCmd(c: Cluster, ns: string, podName: string, o: { wait: boolean; timeoutMs: number }, progress: Progress): Promise<{ cp?: LockCheckpoint; final: string }> {
  const t0 = Date.now();
  const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(1)}s]`;
  const pod = await readPod(c, ns, podName);
  const owner = (pod.metadata?.ownerReferences ?? []).find((x) => x.controller);
  if (!owner) throw new CliError(`pod ${ns}/${podName} has no controller (StatefulSet, ReplicaSet, …): nothing would recreate it after the delete. Use \`kubectl lockmig checkpoint\` and a restore pod instead (docs/walkthrough.md).`, EXIT.FAILURE);
  if (!pod.spec?.nodeName || pod.status?.phase !== 'Running') throw new CliError(`pod ${ns}/${podName} is ${pod.status?.phase ?? 'not running'}: it holds no locks to migrate`, EXIT.FAILURE);
  if (pod.metadata?.deletionTimestamp) throw new CliError(`pod ${ns}/${podName} is already terminating`, EXIT.FAILURE);
  const name = stopCheckpointName(pod);
  const body = stopCheckpoint(pod, 'delete') as { metadata: { labels: Record<string, string> } };
  body.metadata.labels['app.kubernetes.io/managed-by'] = 'kubectl-lockmig';
  try {
    await c.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, body });
    progress.line(`${stamp()} lockcheckpoint.lockmig.dev/${name} created for ${ns}/${podName} (${owner.kind} ${owner.name}, target policy Workload)`);
  } catch (err) {
    if (statusOf(err) !== 409) throw new CliError(`cannot create LockCheckpoint ${ns}/${name}: ${apiMessage(err)}`, EXIT.FAILURE);
    progress.line(`${stamp()} lockcheckpoint.lockmig.dev/${name} exists already for this pod; using it`);
  }
  const seen = { last: '' };
  await waitFor(c, ns, name, recorded, progress, o.timeoutMs, t0, seen);
  try {
    await c.core.deleteNamespacedPod({ namespace: ns, name: podName });
  } catch (err) {
    throw new CliError(`the locks are recorded in ${ns}/${name}, but deleting pod ${ns}/${podName} failed: ${apiMessage(err)}`, EXIT.FAILURE);
  }
  progress.line(`${stamp()} pod ${ns}/${podName} deleted; waiting for ${owner.kind} ${owner.name} to create its replacement`);
  if (!o.wait) return { final: `pod ${ns}/${podName} deleted; its replacement restores from ${ns}/${name} (follow it: kubectl lockmig status ${name} -n ${ns})` };
  const done = await waitFor(c, ns, name, (cp) => cp.status?.phase === 'Restored', progress, o.timeoutMs, t0, seen);
  const r = done.status?.restore;
  return {
    cp: done,
    final: `migrated ${ns}/${podName} → pod ${done.status?.restoredPod?.name ?? r?.podName ?? '?'} on ${r?.nodeName ?? done.status?.restoredPod?.nodeName ?? '?'}: `
      + `${r?.message ?? 'the locks are held'} (${((Date.now() - t0) / 1000).toFixed(1)}s)`,
  };
}
