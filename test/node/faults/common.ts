/**
 * One migration at a time for the fault suite: a source (SQLite in BEGIN EXCLUSIVE + an OFD lock +
 * a flock, python3 holder) on its own data directory, a LockCheckpoint, a restore pod, and the
 * final check made by programs lockmig did not write: `sqlite3` says "database is locked",
 * `flock -n` and an OFD attempt fail, and the kernel (/proc/locks, fdinfo) names the restore pod.
 */
import { expect, onTestFailed } from 'vitest';
import type { LockCheckpoint } from '../../../src/api/index.js';
import {
  HOST_DATA, apply, createNamespace, deleteNamespace, diagnostics, getPod, kubectl, kubectlOk, testNode, waitFor,
  waitPodGone, waitPodReady, Inspector, hostPathVolume, IMAGES, podOn,
} from '../support/cluster.js';
import { checkpoint, contend, dataDir, expectHeldBy, restorePod, startDatabase, waitLog, type DataDir } from '../support/workloads.js';
import { condition, ensureChart, settle, warnings } from '../support/faults.js';

export interface World { ns: string; node: string; insp: Inspector; contender: string }

export async function world(prefix: string): Promise<World> {
  await ensureChart();
  const node = await testNode();
  const ns = await createNamespace(prefix);
  const insp = await Inspector.start(ns, node);
  // one contender for every scenario: the namespace's data directory is its /data
  apply([podOn(node, 'contender', ns, {
    containers: [{ name: 'c', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['sleep', 'infinity'], volumeMounts: [{ name: 'data', mountPath: '/data' }] }],
    volumes: [hostPathVolume('data', `${HOST_DATA}/${ns}`)],
  })]);
  await waitPodReady(ns, 'contender');
  return { ns, node, insp, contender: 'contender' };
}
export function teardown(w: World | undefined): void {
  if (!w) return;
  w.insp.sh(`rm -rf '/host${HOST_DATA}/${w.ns}'`);
  deleteNamespace(w.ns);
}
export function diagnoseOnFailure(w: () => World | undefined): void {
  onTestFailed(() => { const x = w(); if (x) console.log(diagnostics([x.ns])); });
}

export interface Source { name: string; uid: string; data: DataDir }

/** A database pod holding SQLite's locks, an OFD lock and a flock on its own directory. */
export async function startSource(w: World, name: string, extra: { restartPolicy?: string; wideFds?: number } = {}): Promise<Source> {
  const data = dataDir(w.ns, name);
  if (extra.restartPolicy || extra.wideFds) {
    const holder = ['/usr/local/bin/holder.py', '--sqlite', '/data/app.db', '--ofd', '/data/ofd.lock', '--flock', '/data/flock.lock'];
    // wideFds: the holder starts with that many more open (unlocked) fds (at most the nofile limit allows), inherited through exec
    const command = extra.wideFds
      ? ['python3', '-c', `import os, resource\n_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\nresource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\nfor _ in range(min(${extra.wideFds}, hard - 64)):\n    os.set_inheritable(os.open('/data/wide', os.O_RDONLY | os.O_CREAT), True)\nos.execv('/usr/bin/python3', ['python3'] + ${JSON.stringify(holder)})`]
      : ['python3', ...holder];
    apply([podOn(w.node, name, w.ns, {
      ...(extra.restartPolicy ? { restartPolicy: extra.restartPolicy } : {}),
      containers: [{ name: 'db', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command, volumeMounts: [{ name: 'data', mountPath: '/data' }] }],
      volumes: [hostPathVolume('data', data.host)],
    }, { labels: { app: 'db' } })]);
    await waitPodReady(w.ns, name);
    await waitLog(w.ns, name, /"sqlite"/);
  } else {
    await startDatabase(w.node, w.ns, name, data);
  }
  const p = await getPod(w.ns, name);
  return { name, uid: p!.metadata!.uid!, data };
}

export function createCheckpoint(w: World, name: string, source: string, spec: Record<string, unknown> = {}): void {
  apply([checkpoint(w.ns, name, source, spec)]);
}

/**
 * The usual starting point of a fault: a source pod named `name` and a checkpoint `name` of it,
 * HandoverReady (images written, the agent's vault holds its OFD/flock descriptions).
 */
export async function handoverReady(w: World, name: string): Promise<{ source: Source; checkpoint: LockCheckpoint }> {
  const source = await startSource(w, name);
  createCheckpoint(w, name, source.name);
  const c = await settle(w.ns, name, ['HandoverReady', 'Dumped', 'Failed'], 60_000);
  expect(c.status?.phase, JSON.stringify(c.status?.conditions)).toBe('HandoverReady');
  return { source, checkpoint: c };
}

export async function deleteSource(w: World, s: Source, force = false): Promise<void> {
  kubectl(['delete', 'pod', '-n', w.ns, s.name, '--wait=false', ...(force ? ['--grace-period=0', '--force'] : [])]);
  await waitPodGone(w.ns, s.name);
}

/** Paths as the contender sees them (the namespace's data directory is its /data). */
const inContender = (s: Source, f: string) => `/data/${s.data.host.split('/').pop()}/${f}`;

/** Independent contenders on the source's files: true if every one of them was refused. */
export function contendersRefused(w: World, s: Source): { sqlite: boolean; flock: boolean; ofd: boolean } {
  const sq = contend.sqlite(w.ns, w.contender, inContender(s, 'app.db'));
  return {
    sqlite: sq.status !== 0 && /database is locked/.test(sq.stderr + sq.stdout),
    flock: contend.flock(w.ns, w.contender, inContender(s, 'flock.lock')).status === 7,
    ofd: contend.ofd(w.ns, w.contender, inContender(s, 'ofd.lock')).status === 1,
  };
}

/** Creates the restore pod (retrying a refused admission only when `retryAdmission`), returns its name. */
export function createRestorePod(w: World, s: Source, pod: string, ck: string): void {
  apply([restorePod(w.node, w.ns, pod, s.data, ck)]);
}

/**
 * The end of every migration: the restore pod is Ready, the checkpoint Restored and attributed to
 * it, every contender refused, and the kernel shows its processes holding every lock.
 */
export async function expectRestored(w: World, s: Source, pod: string, ck: string): Promise<LockCheckpoint> {
  const ready = await waitPodReady(w.ns, pod, 150_000);
  const c = await settle(w.ns, ck, ['Restored'], 90_000);
  expect(c.status?.restoredPod?.uid, 'checkpoint attributed to the restore pod').toBe(ready.metadata!.uid);
  expect(c.status?.restore?.state).toBe('Held');
  expect(contendersRefused(w, s)).toEqual({ sqlite: true, flock: true, ofd: true });
  expectHeldBy(w.insp, s.data, ready.metadata!.uid!);
  return c;
}

/** What the checkpoint says about a lost handover: the condition and the Warning event. */
export async function waitHandoverLostReported(w: World, ck: string, timeoutMs = 90_000): Promise<string> {
  return waitFor(`HandoverLost reported on ${ck}`, () => {
    const c = kubectl(['get', 'lockcheckpoint', '-n', w.ns, ck, '-o', 'json']).stdout;
    if (!c) return undefined;
    const obj = JSON.parse(c) as LockCheckpoint;
    const cond = condition(obj, 'HandoverLost');
    const ev = warnings(w.ns, ck).filter((l) => l.startsWith('HandoverLost'));
    return cond?.status === 'True' && ev.length > 0 ? `${cond.reason}: ${cond.message ?? ''} / event ${ev[0]}` : undefined;
  }, timeoutMs, 500);
}

export function handoverLost(c: LockCheckpoint): boolean {
  return condition(c, 'HandoverLost')?.status === 'True';
}

export { kubectlOk };
