/**
 * Workloads of the real-node suite, as a user would write them: a database pod (python3 holder:
 * SQLite in BEGIN EXCLUSIVE, an OFD lock, a flock) on a hostPath data volume, its replacement
 * (same image, `holder.py --adopt` reports what it inherited), a contender pod with the tools
 * nobody here wrote (sqlite3, flock, python3), and LockCheckpoints.
 */
import { expect } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import type { LockCheckpoint } from '../../../src/api/index.js';
import {
  HOST_DATA, IMAGES, apply, hostPathVolume, kubectl, podOn, waitCheckpoint, waitPodReady, type Inspector,
} from './cluster.js';

export interface DataDir {
  /** on the node */
  readonly host: string;
  /** in the pods */
  readonly mount: '/data';
}
export function dataDir(namespace: string, name = 'data'): DataDir {
  return { host: `${HOST_DATA}/${namespace}/${name}`, mount: '/data' };
}

const dataMount = { name: 'data', mountPath: '/data' };

export const HOLDER_ARGS = ['--sqlite', '/data/app.db', '--ofd', '/data/ofd.lock', '--flock', '/data/flock.lock'];

/** The source: python3 holds SQLite's locks (BEGIN EXCLUSIVE), an OFD lock and a flock on the data volume. */
export async function startDatabase(node: string, ns: string, name: string, data: DataDir, labels: Record<string, string> = { app: 'db' }): Promise<V1Pod> {
  apply([podOn(node, name, ns, {
    containers: [{ name: 'db', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['python3', '/usr/local/bin/holder.py', ...HOLDER_ARGS], volumeMounts: [dataMount] }],
    volumes: [hostPathVolume('data', data.host)],
  }, { labels })]);
  const p = await waitPodReady(ns, name);
  // the holder prints one line once everything is held
  await waitLog(ns, name, /"sqlite": "\/data\/app.db"/);
  return p;
}

/** The replacement, opted in by the label and the annotation naming the checkpoint (the webhook wraps it). */
export function restorePod(node: string, ns: string, name: string, data: DataDir, checkpoint: string): object {
  return podOn(node, name, ns, {
    containers: [{ name: 'db', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['python3', '/usr/local/bin/holder.py', '--adopt'], volumeMounts: [dataMount] }],
    volumes: [hostPathVolume('data', data.host)],
  }, { labels: { app: 'db', 'lockmig.dev/restore': 'true' }, annotations: { 'lockmig.dev/restore-from': checkpoint } });
}

/** A pod with sqlite3, flock and python3 on the same data volume (for kubectl exec). */
export async function startContender(node: string, ns: string, data: DataDir, name = 'contender'): Promise<string> {
  apply([podOn(node, name, ns, {
    containers: [{ name: 'c', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['sleep', 'infinity'], volumeMounts: [dataMount] }],
    volumes: [hostPathVolume('data', data.host)],
  })]);
  await waitPodReady(ns, name);
  return name;
}

export function checkpoint(ns: string, name: string, sourcePod: string, spec: Record<string, unknown> = {}): object {
  return { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name, namespace: ns }, spec: { sourcePodName: sourcePod, ...spec } };
}
export async function waitDumped(ns: string, name: string): Promise<LockCheckpoint> {
  return waitCheckpoint(ns, name, (c) => c.status?.phase === 'Dumped' || c.status?.phase === 'HandoverReady' || c.status?.phase === 'Failed', 'Dumped or HandoverReady', 60_000);
}

export async function waitLog(ns: string, pod: string, re: RegExp, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = kubectl(['logs', '-n', ns, pod, '--all-containers']);
    last = r.stdout + r.stderr;
    if (re.test(r.stdout)) return r.stdout;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`pod ${ns}/${pod} never logged ${re}; last: ${last.slice(-2000)}`);
}

/** Contenders from inside a pod: what an independent writer on the same volume gets. */
export const contend = {
  sqlite(ns: string, pod: string, db = '/data/app.db') {
    return kubectl(['exec', '-n', ns, pod, '--', 'sqlite3', '-cmd', '.timeout 0', db, 'BEGIN EXCLUSIVE; COMMIT;']);
  },
  flock(ns: string, pod: string, file = '/data/flock.lock') {
    return kubectl(['exec', '-n', ns, pod, '--', 'flock', '-n', '-E', '7', file, 'true']);
  },
  /** exit 0: acquired, 1: busy */
  ofd(ns: string, pod: string, file = '/data/ofd.lock') {
    const py = "import fcntl,struct,sys,os\nfd=os.open(sys.argv[1],os.O_RDWR)\ntry:\n fcntl.fcntl(fd,37,struct.pack('hhqqi4x',fcntl.F_WRLCK,0,0,100,0))\nexcept OSError:\n sys.exit(1)\n";
    return kubectl(['exec', '-n', ns, pod, '--', 'python3', '-c', py, file]);
  },
};

/**
 * Every lock the kernel shows on the database's files belongs to `podUID`: a POSIX lock by its
 * owner pid in /proc/locks; an OFD or flock lock (owned by an open file description) by a
 * lock: line in the fdinfo of one of the pod's processes — /proc/locks shows -1 for OFD locks,
 * and for a flock the pid of whoever first took it, which after a handover is the source's.
 */
export function expectHeldBy(insp: Inspector, data: DataDir, podUID: string, files = ['app.db', 'ofd.lock', 'flock.lock']): void {
  const pids = insp.podPids(podUID);
  expect(pids.length, `processes of pod ${podUID}`).toBeGreaterThan(0);
  const fdinfo = pids.flatMap((pid) => insp.fdLocks(pid).map((l) => l.lock));
  for (const f of files) {
    const key = insp.fileKey(`${data.host}/${f}`);
    const locks = insp.locksOn(`${data.host}/${f}`);
    expect(locks.length, `locks on ${f}`).toBeGreaterThan(0);
    for (const l of locks) {
      if (l.kind === 'POSIX') expect(insp.podUIDOf(l.pid), `POSIX lock on ${f} held by pid ${l.pid}`).toBe(podUID);
      else expect(fdinfo.some((x) => x.includes(` ${key} `) && x.includes(l.kind)), `${l.kind} lock on ${f} in the fdinfo of pod ${podUID}'s processes`).toBe(true);
    }
  }
}
