/**
 * The agent's watch over restore pods on its own node: pods the webhook wrapped (readiness gate
 * `lockmig.dev/locks-held`). For each wrapped container it finds the container's top process
 * by cgroup, reads the state file its restore shim wrote (through the container's own root,
 * never following a symlink: the file sits on a volume the application can write), and
 * reports the outcome:
 *  - the pod condition `lockmig.dev/locks-held` (so the pod turns Ready only once its locks are
 *    held — no Service traffic, `kubectl wait --for=condition=Ready` waits for it);
 *  - the LockCheckpoint's `status.restore` (the controller turns it into phase Restored and the
 *    LocksHeld condition), with the lock-free window measured against the source's exit;
 *  - a `LocksHeld` (or `RestoreFailed`) event on both.
 * Until every container reported, the pod is looked at again every second (a shim writing its
 * file causes no API event); a pod whose condition is True is never touched again.
 */
import fs from 'node:fs';
import {
  CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig, type KubernetesListObject, type V1Pod,
} from '@kubernetes/client-node';
import {
  ANNOTATION_RESTORE_FROM, API_VERSION, GROUP, KIND, PLURAL, POD_CONDITION_LOCKS_HELD, VERSION, parseLockCheckpoint,
  type ClockReading, type LockCheckpoint, type RestoreReport,
} from '../api/index.js';
import type { Logger } from '../log/logger.js';
import type { Clock } from '../kube/clock.js';
import type { EventRecorder } from '../kube/events.js';
import { ResilientInformer } from '../kube/informer.js';
import { WorkQueue, runWorkers } from '../kube/workqueue.js';
import { findPodProcesses, type PodProcess } from '../proc/cgroup.js';
import { readStatus } from '../proc/index.js';
import { openBeneath } from '../engine/restore-sys.js';
import { parseRestoreState, selfStartTicks, MAX_STATE_FILE_BYTES, type RestoreStateFile } from '../engine/restore-state.js';
import { open, closeQuiet, O_PATH, O_DIRECTORY, O_CLOEXEC, O_RDONLY, O_NOFOLLOW } from '../sys/index.js';
import { summarizeRestore, wrappedContainers, type ContainerView } from './restore-report.js';
import { bareContainerID, cgroupPodUID, topProcess } from './select.js';

export interface RestoreWatchOptions {
  readonly kc: KubeConfig;
  readonly node: string;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly events?: EventRecorder;
  readonly procRoot?: string;
  readonly findProcesses?: (podUID: string) => PodProcess[];
  /** the source's exit as this very agent saw it (same-node migrations), before status.agent shows it */
  readonly sourceExitOf?: (namespace: string, name: string) => ClockReading | undefined;
  /** poll interval while a shim has not reported (default 1 s) */
  readonly pollMs?: number;
  /** called once per report that reached Held or Failed (metrics) */
  readonly onReport?: (result: 'Held' | 'Failed') => void;
}

/** Has the pod the webhook's readiness gate, and is its condition not True yet? */
export function awaitsLocks(pod: V1Pod): boolean {
  if (!(pod.spec?.readinessGates ?? []).some((g) => g.conditionType === POD_CONDITION_LOCKS_HELD)) return false;
  const c = (pod.status?.conditions ?? []).find((x) => x.type === POD_CONDITION_LOCKS_HELD);
  return c?.status !== 'True' && pod.metadata?.deletionTimestamp === undefined && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
}

/**
 * Read a container's state file through its own root: openat2 beneath /proc/<pid>/root with no
 * symlinks and no magic links, bounded in size. `{}` when the shim has not written it yet.
 */
export function readStateInContainer(pid: number, file: string, procRoot = '/proc'): { state?: RestoreStateFile; error?: string } {
  let root = -1;
  let fd = -1;
  try {
    root = open(`${procRoot}/${pid}/root`, O_PATH | O_DIRECTORY | O_CLOEXEC);
    fd = openBeneath(root, file.replace(/^\/+/, ''), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return { error: `${file} is not a regular file` };
    if (st.size > MAX_STATE_FILE_BYTES) return { error: `${file} is ${st.size} bytes` };
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = fs.readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return { state: parseRestoreState(JSON.parse(buf.subarray(0, off).toString('utf8')), file) };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ESRCH') return {};
    return { error: (err as Error).message };
  } finally {
    if (fd >= 0) closeQuiet(fd);
    if (root >= 0) closeQuiet(root);
  }
}

export class RestoreWatcher {
  private readonly o: RestoreWatchOptions;
  private readonly log: Logger;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly queue: WorkQueue;
  private informer?: ResilientInformer<V1Pod>;
  private workers?: Promise<void>;
  /** pod uid → the last report written, so an unchanged report is not written again */
  private readonly written = new Map<string, string>();

  constructor(o: RestoreWatchOptions) {
    this.o = o;
    this.log = o.logger.child({ watcher: 'restore-pods' });
    this.core = o.kc.makeApiClient(CoreV1Api);
    this.custom = o.kc.makeApiClient(CustomObjectsApi);
    this.queue = new WorkQueue({ clock: o.clock, baseDelayMs: 200, maxDelayMs: 10_000 });
  }

  isSynced(): boolean {
    return this.informer?.synced ?? false;
  }

  async start(): Promise<void> {
    const fieldSelector = `spec.nodeName=${this.o.node}`;
    this.workers = runWorkers(this.queue, 2, (key) => this.handle(key), (key, err, d) => {
      this.log.warn('restore pod check failed; retrying', { key, error: (err as Error).message, retryInMs: d });
    });
    const inf = new ResilientInformer<V1Pod>({
      kubeConfig: this.o.kc,
      path: `/api/v1/pods?fieldSelector=${encodeURIComponent(fieldSelector)}`,
      list: async () => (await this.core.listPodForAllNamespaces({ fieldSelector })) as KubernetesListObject<V1Pod>,
      clock: this.o.clock, logger: this.log, name: 'pods',
    });
    const enqueue = (p: V1Pod) => { if (awaitsLocks(p) && p.metadata?.namespace && p.metadata.name) this.queue.add(`${p.metadata.namespace}/${p.metadata.name}`); };
    inf.on('add', enqueue);
    inf.on('update', enqueue);
    inf.on('delete', (p) => { if (p.metadata?.uid) this.written.delete(p.metadata.uid); });
    this.informer = inf;
    await inf.start();
    this.log.info('watching restore pods on this node', { fieldSelector });
  }

  async stop(): Promise<void> {
    await this.informer?.stop().catch(() => undefined);
    this.queue.shutDown();
    await this.workers;
  }

  private async getCheckpoint(namespace: string, name: string): Promise<LockCheckpoint | undefined> {
    try {
      return parseLockCheckpoint(await this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, name }));
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  /** What each wrapped container's shim reported, read from the host side. */
  private observe(pod: V1Pod): ContainerView[] {
    const uid = cgroupPodUID(pod);
    const procRoot = this.o.procRoot ?? '/proc';
    const procs = uid ? (this.o.findProcesses ?? ((u: string) => findPodProcesses(u, { procRoot })))(uid) : [];
    const ppid = (pid: number): number | undefined => { try { return readStatus(pid).ppid; } catch { return undefined; } };
    return wrappedContainers(pod).map((w): ContainerView => {
      const st = (pod.status?.containerStatuses ?? []).find((s) => s.name === w.name);
      const running = st?.state?.running !== undefined;
      const base = { name: w.name, running, restartCount: st?.restartCount ?? 0 };
      const term = st?.state?.terminated ?? st?.lastState?.terminated;
      const lastExit = !running && term ? { lastExit: { exitCode: term.exitCode, ...(term.message ? { message: term.message } : {}) } } : {};
      const id = bareContainerID(st?.containerID);
      const pids = id ? procs.filter((p) => p.containerID === id).map((p) => p.pid) : [];
      const top = topProcess(pids, ppid);
      if (top === undefined) return { ...base, ...lastExit };
      const r = readStateInContainer(top, w.stateFile, procRoot);
      let current: boolean | undefined;
      if (r.state?.startTicks) {
        try { current = selfStartTicks(fs.readFileSync(`${procRoot}/${top}/stat`, 'utf8')) === r.state.startTicks; } catch { /* gone */ }
      }
      return { ...base, ...lastExit, ...(r.state ? { state: r.state } : {}), ...(r.error ? { stateError: r.error } : {}), ...(current !== undefined ? { current } : {}) };
    });
  }

  private async handle(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [ns, name] = key.split('/') as [string, string];
    const pod = this.informer?.get(name, ns);
    if (!pod || !awaitsLocks(pod)) return;
    const ref = (pod.metadata?.annotations?.[ANNOTATION_RESTORE_FROM] ?? '').trim();
    const ckName = ref.includes('/') ? ref.split('/')[1]! : ref;
    const log = this.log.child({ namespace: ns, pod: name, checkpoint: ckName });
    const cp = ckName ? await this.getCheckpoint(ns, ckName) : undefined;
    const claimed = cp?.status?.restoredPod?.name === name;
    const source = (cp ? this.o.sourceExitOf?.(ns, cp.metadata.name) : undefined) ?? cp?.status?.agent?.sourceExit;
    const views = this.observe(pod);
    const sum = summarizeRestore(pod, this.o.node, views, source);
    const poll = this.o.pollMs ?? 1000;

    // The source's exit is reported by its agent a moment after it happens: give it a few
    // seconds before settling for "window unknown".
    if (sum.done && sum.report.windowMilliseconds === undefined && cp && !source) {
      const since = Date.parse(sum.report.heldTime ?? '') || this.o.clock.now();
      if (this.o.clock.now() - since < 5000) return { requeueAfterMs: 250 };
    }

    const fingerprint = JSON.stringify([sum.condition, sum.report.state, sum.report.message]);
    if (this.written.get(pod.metadata?.uid ?? key) !== fingerprint) {
      if (cp && claimed) await this.patchCheckpoint(cp, sum.report);
      await this.patchPodCondition(pod, sum.condition);
      this.written.set(pod.metadata?.uid ?? key, fingerprint);
      const podRef = { apiVersion: 'v1', kind: 'Pod', name, namespace: ns, ...(pod.metadata?.uid ? { uid: pod.metadata.uid } : {}) };
      const ckRef = cp ? { apiVersion: API_VERSION, kind: KIND, name: cp.metadata.name, namespace: ns, ...(cp.metadata.uid ? { uid: cp.metadata.uid } : {}) } : undefined;
      if (sum.report.state === 'Held' || sum.report.state === 'Failed') {
        this.o.onReport?.(sum.report.state);
        const type = sum.report.state === 'Held' ? 'Normal' : 'Warning';
        const reason = sum.condition.reason;
        void this.o.events?.record(podRef, type, reason, sum.condition.message);
        if (ckRef && claimed) void this.o.events?.record(ckRef, type, reason, sum.condition.message);
      }
      log.info('restore pod reported', { state: sum.report.state, reason: sum.condition.reason, windowMilliseconds: sum.report.windowMilliseconds, locks: sum.report.locks?.total });
    }
    if (!sum.done) return { requeueAfterMs: poll };
  }

  private async patchCheckpoint(cp: LockCheckpoint, report: RestoreReport): Promise<void> {
    await this.custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: cp.metadata.namespace, plural: PLURAL, name: cp.metadata.name, body: { status: { restore: report } }, fieldManager: 'lockmig-agent' },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  private async patchPodCondition(pod: V1Pod, c: { status: 'True' | 'False'; reason: string; message: string }): Promise<void> {
    const prev = (pod.status?.conditions ?? []).find((x) => x.type === POD_CONDITION_LOCKS_HELD);
    const lastTransitionTime = prev && prev.status === c.status && prev.lastTransitionTime ? prev.lastTransitionTime : new Date(this.o.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
    await this.core.patchNamespacedPodStatus(
      { name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, fieldManager: 'lockmig-agent',
        body: { status: { conditions: [{ type: POD_CONDITION_LOCKS_HELD, status: c.status, reason: c.reason, message: c.message.slice(0, 4000), lastTransitionTime }] } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
  }
}
