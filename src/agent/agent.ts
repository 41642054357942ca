/**
 * The node agent's Kubernetes side: watches the LockCheckpoints assigned to its node
 * (labelSelector `lockmig.dev/node=<node>`), runs one piece of work at a time per object
 * (WorkQueue), and reports through `status.agent` (JSON merge patch on the status subresource).
 * The work itself is in dump.ts (dump, delete images) and decide.ts (what to do).
 *
 * The informer is src/kube's ResilientInformer (client-node's ListWatch stops on most errors;
 * that one restarts it with backoff and relists, so every object is seen again: level-based).
 */
import {
  CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions,
  type KubeConfig, type KubernetesListObject, type KubernetesObject, type V1Pod,
} from '@kubernetes/client-node';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import {
  ANNOTATION_RESTORE_FROM, API_VERSION, DEFAULT_KUBELET_CHECKPOINT_DIR, GROUP, KIND, LABEL_NODE, PLURAL, VERSION, parseLockCheckpoint, type AgentReport, type LockCheckpoint,
} from '../api/index.js';
import type { Logger } from '../log/logger.js';
import { WorkQueue, runWorkers } from '../kube/workqueue.js';
import { realClock, type Clock } from '../kube/clock.js';
import { ResilientInformer } from '../kube/informer.js';
import type { EventRecorder } from '../kube/events.js';
import { parseKubeletCgroupPath } from '../proc/cgroup.js';
import { decideAgentAction } from './decide.js';
import { RestorePodMatcher, deleteImages, dumpForCheckpoint, vaultHolds, vaultLost, type AgentDeps, type DumpOutcome, type VaultPort } from './dump.js';
import { importForCheckpoint } from './import.js';
import type { ConfigMapPlan } from './storage.js';
import { cgroupPodUID } from './select.js';
import { ExitWatcher, type ExitReading } from './exit-watch.js';
import { RestoreWatcher } from './restore-watch.js';

export interface AgentOptions extends Omit<AgentDeps, 'newMatcher'> {
  readonly kc: KubeConfig;
  readonly clock?: Clock;
  readonly events?: EventRecorder;
  /** how long to keep looking for an admitted restore pod that does not exist yet (default 60 s) */
  readonly restorePodWaitMs?: number;
  /** where this node's kubelet writes checkpoint archives (default /var/lib/kubelet/checkpoints) */
  readonly kubeletCheckpointDir?: string;
  /** watch restore pods on this node and report their locks (default true) */
  readonly watchRestorePods?: boolean;
  /** what the previous vault held for checkpoint `ns/name` before this agent started (for the HandoverLost event) */
  readonly vaultLostDetail?: (key: string) => string | undefined;
  /** checkpoints handled at once (default AGENT_WORKERS; the dumps themselves are synchronous, one at a time) */
  readonly workers?: number;
}

/** Default of AgentOptions.workers (`lockmig agent --workers`): they overlap the API round trips around the dumps. */
export const AGENT_WORKERS = 4;

export function agentMetrics(registry = new Registry(), vaultEntries: () => number = () => 0) {
  return {
    registry,
    dumps: new Counter({ name: 'lockmig_agent_dumps_total', help: 'Dumps by result (Dumped, HandoverReady, Failed reason)', labelNames: ['result'], registers: [registry] }),
    locks: new Counter({ name: 'lockmig_agent_locks_dumped_total', help: 'Locks recorded, by kind', labelNames: ['kind'], registers: [registry] }),
    duration: new Histogram({ name: 'lockmig_agent_dump_duration_seconds', help: 'Wall time of one dump', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry] }),
    informerRestarts: new Counter({ name: 'lockmig_agent_informer_restarts_total', help: 'LockCheckpoint informer restarts after errors', registers: [registry] }),
    held: new Gauge({
      name: 'lockmig_agent_vault_entries', help: 'Container entries the handover vault holds (or is sending) right now', registers: [registry],
      // read when scraped: entries leave the vault on delivery, release or loss
      collect() { this.set(vaultEntries()); },
    }),
    restores: new Counter({ name: 'lockmig_agent_restores_total', help: 'Restore pods on this node by outcome (Held, Failed)', labelNames: ['result'], registers: [registry] }),
    handoverLost: new Counter({ name: 'lockmig_agent_handover_lost_total', help: 'Checkpoints whose held descriptions the vault lost before a restore pod received them (agent restart, hold time over): their OFD/flock locks are re-taken', registers: [registry] }),
    handoverResumed: new Counter({ name: 'lockmig_agent_handover_resumed_total', help: 'Checkpoints whose descriptions a restarted agent took again from the still-running source (nothing was free)', registers: [registry] }),
    imagesDeleted: new Counter({ name: 'lockmig_agent_images_deleted_total', help: 'Checkpoint image directories deleted', registers: [registry] }),
  };
}

export type AgentMetrics = ReturnType<typeof agentMetrics>;

const keyOf = (ns: string, name: string) => `${ns}/${name}`;

export class Agent {
  readonly metrics: AgentMetrics;
  private readonly o: AgentOptions;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly queue: WorkQueue;
  private informer?: ResilientInformer<KubernetesObject>;
  private workers?: Promise<void>;
  private stopped = false;
  /** object uid → dump already done by this process (its report may still need writing) */
  private readonly done = new Map<string, { report: AgentReport; configMaps?: readonly ConfigMapPlan[] }>();
  /** object uid → when this process accepted it (reported status.agent Dumping) and has not dumped it yet */
  private readonly accepted = new Map<string, Date>();
  /** `ns/name` → vault matchers waiting for the restore pod's UID */
  private readonly matchers = new Map<string, { uid: string; list: RestorePodMatcher[]; waitingSince?: number; placed?: boolean; claim?: string; podUID?: string }>();
  /** `ns/name` → when the dumped lock owners exited (for same-node windows before status.agent shows it) */
  private readonly exits = new Map<string, ExitReading>();
  private readonly exitWatcher = new ExitWatcher();
  private readonly restoreWatcher?: RestoreWatcher;

  constructor(opts: AgentOptions) {
    this.o = opts;
    this.log = opts.logger.child({ node: opts.node });
    this.clock = opts.clock ?? realClock;
    this.custom = opts.kc.makeApiClient(CustomObjectsApi);
    this.core = opts.kc.makeApiClient(CoreV1Api);
    this.queue = new WorkQueue({ clock: this.clock, baseDelayMs: 200, maxDelayMs: 30_000 });
    const vault = opts.vault;
    this.metrics = agentMetrics(undefined, () => (vault?.list() ?? []).filter((e) => e.state === 'held' || e.state === 'sending').length);
    if (opts.watchRestorePods !== false) {
      this.restoreWatcher = new RestoreWatcher({
        kc: opts.kc, node: opts.node, logger: this.log, clock: this.clock, procRoot: opts.procRoot,
        ...(opts.events ? { events: opts.events } : {}),
        ...(opts.findProcesses ? { findProcesses: opts.findProcesses } : {}),
        sourceExitOf: (ns, name) => {
          const r = this.exits.get(keyOf(ns, name));
          return r ? { time: r.time, monotonicNs: r.monotonicNs.toString(), ...(r.bootID ? { bootID: r.bootID } : {}) } : undefined;
        },
        onReport: (result) => this.metrics.restores.inc({ result }),
      });
    }
    // A vault entry released after its hold time: look at the checkpoint again (handover-lost).
    opts.vault?.on?.('released', (e) => {
      const dot = e.checkpoint.lastIndexOf('.');
      if (dot > 0) this.queue.add(e.checkpoint.slice(0, dot));
    });
  }

  /** true once the first list arrived (readiness) */
  isSynced(): boolean {
    return (this.informer?.synced ?? false) && (this.restoreWatcher?.isSynced() ?? true) && !this.stopped;
  }

  async start(): Promise<void> {
    this.workers = runWorkers(this.queue, this.o.workers ?? AGENT_WORKERS, (key) => this.handle(key), (key, err, d) => {
      this.log.warn('agent work failed; retrying', { key, error: (err as Error).message, retryInMs: d });
    });
    await this.startInformer();
    await this.restoreWatcher?.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.exitWatcher.close();
    await this.restoreWatcher?.stop();
    await this.informer?.stop().catch(() => undefined);
    this.queue.shutDown();
    await this.workers;
  }

  private async startInformer(): Promise<void> {
    const selector = `${LABEL_NODE}=${this.o.node}`;
    const inf = new ResilientInformer<KubernetesObject>({
      kubeConfig: this.o.kc,
      path: `/apis/${GROUP}/${VERSION}/${PLURAL}`,
      labelSelector: selector,
      list: async () => (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, labelSelector: selector })) as KubernetesListObject<KubernetesObject>,
      clock: this.clock,
      logger: this.log,
      name: 'lockcheckpoints',
      onRestart: () => this.metrics.informerRestarts.inc(),
    });
    const enqueue = (o: KubernetesObject) => {
      if (o.metadata?.name && o.metadata.namespace) this.queue.add(keyOf(o.metadata.namespace, o.metadata.name));
    };
    inf.on('add', enqueue);
    inf.on('update', enqueue);
    inf.on('delete', (o) => {
      if (!o.metadata?.name || !o.metadata.namespace) return;
      this.forget(keyOf(o.metadata.namespace, o.metadata.name), o.metadata.uid);
    });
    this.informer = inf;
    await inf.start();
    this.log.info('watching LockCheckpoints', { labelSelector: selector });
  }

  /** The object was deleted from the API: drop our memory of it and anything the vault holds. */
  private forget(key: string, uid: string | undefined): void {
    if (uid) { this.done.delete(uid); this.accepted.delete(uid); }
    this.exitWatcher.cancel(key);
    this.exits.delete(key);
    const m = this.matchers.get(key);
    if (m) {
      for (const x of m.list) this.o.vault?.release(x.checkpoint, 'cancelled');
      this.matchers.delete(key);
    }
  }

  private async patchAgent(cp: LockCheckpoint, report: AgentReport): Promise<void> {
    await this.custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: cp.metadata.namespace, plural: PLURAL, name: cp.metadata.name, body: { status: { agent: report } }, fieldManager: 'lockmig-agent' },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  private async getPod(namespace: string, name: string): Promise<V1Pod | undefined> {
    try {
      return await this.core.readNamespacedPod({ namespace, name });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  private async handle(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [ns, name] = key.split('/') as [string, string];
    const raw = this.informer?.get(name, ns);
    if (!raw) return;
    let cp: LockCheckpoint;
    try {
      cp = parseLockCheckpoint(raw);
    } catch (err) {
      this.log.warn('ignoring malformed LockCheckpoint (the controller reports it)', { namespace: ns, name, error: (err as Error).message });
      return;
    }
    const known = (this.o.vault?.list() ?? []).some((e) => e.name.startsWith(`${ns}/${name}.`));
    const action = decideAgentAction(cp, this.o.node, {
      vaultHolds: vaultHolds(this.o.vault, ns, name), vaultLost: vaultLost(this.o.vault, ns, name),
      // released by this vault (hold time over), or held by the previous one when it died
      lossRecorded: known || this.o.vaultLostDetail?.(key) !== undefined,
    });
    const log = this.log.child({ namespace: ns, name });
    switch (action.kind) {
      case 'none':
        log.debug('nothing to do', { why: action.why });
        return;
      case 'dump': {
        const uid = cp.metadata.uid ?? key;
        let entry = this.done.get(uid);
        if (!entry) {
          // Accept first (status.agent Dumping: what the controller's accept timeout waits for), and
          // when other checkpoints are waiting, dump on a later pass from the end of the queue: in a
          // burst every queued checkpoint is accepted within seconds, instead of the last ones
          // waiting behind all the dumps and failing as AgentUnavailable (bench/scale.ts).
          let start = this.accepted.get(uid);
          if (!start) {
            start = new Date(this.clock.now());
            const iso = start.toISOString().replace(/\.\d{3}Z$/, 'Z');
            await this.patchAgent(cp, {
              nodeName: this.o.node, state: 'Dumping', startTime: iso, heartbeatTime: iso,
              ...(cp.status?.sourcePodUID ? { podUID: cp.status.sourcePodUID } : {}),
              ...(cp.metadata.generation !== undefined ? { observedGeneration: cp.metadata.generation } : {}),
            });
            this.accepted.set(uid, start);
            if (this.queue.length > 0) return { requeueAfterMs: 0 };
          }
          // a kubelet checkpoint archive already on this node: import it (nothing runs, nothing is stopped)
          const out = cp.spec.source?.kubeletCheckpoint
            ? await importForCheckpoint(cp, { ...this.o, kubeletCheckpointDir: this.o.kubeletCheckpointDir ?? DEFAULT_KUBELET_CHECKPOINT_DIR }, start)
            : dumpForCheckpoint(cp, cp.spec.sourcePodName ? await this.getPod(ns, cp.spec.sourcePodName) : undefined, {
              ...this.o,
              newMatcher: (k) => new RestorePodMatcher(k, parseKubeletCgroupPath),
            }, start);
          const report = out.report;
          entry = this.keep(cp, uid, key, out);
          this.accepted.delete(uid);
          this.metrics.dumps.inc({ result: report.state === 'Failed' ? `Failed/${report.reason}` : report.state });
          if (report.locks) {
            for (const [k, v] of Object.entries(report.locks)) if (k !== 'total') this.metrics.locks.inc({ kind: k.toUpperCase() }, v);
          }
          if (report.dumpMilliseconds !== undefined) this.metrics.duration.observe(report.dumpMilliseconds / 1000);
          if (report.state === 'Failed') void this.o.events?.record(this.ref(cp), 'Warning', report.reason ?? 'AgentFailed', report.message ?? '');
          else void this.o.events?.record(this.ref(cp), 'Normal', report.state, `agent on ${this.o.node}: ${report.message ?? ''}`);
        }
        // a failed write retries from here, never dumps twice
        if (entry.configMaps) await this.applyConfigMaps(cp, entry.configMaps);
        await this.patchAgent(cp, entry.report);
        return;
      }
      case 'delete-images': {
        const report = deleteImages(cp, this.o);
        this.matchers.delete(key);
        this.metrics.imagesDeleted.inc();
        await this.patchAgent(cp, report);
        return;
      }
      case 'handover-lost': {
        if (await this.resumeHandover(cp, log)) return;
        const prev = cp.status!.agent!;
        const message = `${prev.message ?? ''}; the vault no longer holds the descriptions (agent restarted or hold time over): the restore pod re-takes the locks from the images`;
        log.warn('handover lost; reporting Dumped so restore pods re-take the locks');
        this.metrics.handoverLost.inc();
        this.matchers.delete(key);
        await this.custom.patchNamespacedCustomObjectStatus(
          { group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name, fieldManager: 'lockmig-agent',
            body: { status: { agent: { state: 'Dumped', handoverSocket: null, message, handoverLostTime: new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z'), heartbeatTime: new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z') } } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        const detail = this.o.vaultLostDetail?.(key);
        void this.o.events?.record(this.ref(cp), 'Warning', 'HandoverLost', detail
          ? `the agent's vault on ${this.o.node} restarted: ${detail} are gone (their OFD/flock locks were released); the restore pod re-takes them from the images`
          : `agent on ${this.o.node}: the vault no longer holds the open file descriptions; restore pods will re-take the locks`);
        return;
      }
      case 'release-vault': {
        for (const e of this.o.vault?.list() ?? []) {
          if (e.name.startsWith(`${ns}/${name}.`) && (e.state === 'held' || e.state === 'sending')) this.o.vault!.release(e.name, 'cancelled');
        }
        this.matchers.delete(key);
        log.info('checkpoint failed: released the descriptions the vault held for it');
        return;
      }
      case 'identify-target': {
        const m = this.matchers.get(key);
        if (!m) return;
        // A lapsed claim (the restore pod vanished before it held the locks, api/claim.ts) brings
        // another restore pod: forget the old one and identify the new one.
        // Each admission stamps its own claim time, so a new claim is seen even under the same
        // pod name (a StatefulSet's next db-0) before its UID is recorded.
        const want = cp.status?.restoredPod;
        const claim = `${action.podName}@${want?.time ?? ''}`;
        if (m.claim !== undefined && (m.claim !== claim || (want?.uid && m.podUID && want.uid !== m.podUID))) {
          log.info('restore pod changed: retargeting the vault entries', { from: m.claim, fromUID: m.podUID, to: claim, toUID: want?.uid });
          for (const x of m.list) x.clearTarget();
          m.placed = false;
          m.waitingSince = undefined;
          m.podUID = undefined;
        }
        m.claim = claim;
        if (m.list.every((x) => x.target() !== undefined) && m.placed) return;
        const found = await this.getPod(ns, action.podName);
        // Only the admitted pod itself: under the same name there may still be the source pod
        // (a StatefulSet's db-0 terminating while its replacement db-0 is being admitted).
        const pod = found && found.metadata?.uid !== cp.status?.sourcePodUID && !found.metadata?.deletionTimestamp
          && found.metadata?.annotations?.[ANNOTATION_RESTORE_FROM]?.split('/').pop() === name
          && (!cp.status?.restoredPod?.uid || cp.status.restoredPod.uid === found.metadata?.uid) ? found : undefined;
        const node = pod?.spec?.nodeName;
        if (pod && node && node !== this.o.node) {
          // The restore pod runs elsewhere: the descriptions cannot reach it. Let them go, so the
          // locks are free for its re-take as soon as the source exits (else it would wait for the hold time).
          for (const x of m.list) this.o.vault?.release(x.checkpoint, 'cancelled');
          this.matchers.delete(key);
          log.info('restore pod scheduled to another node: no handover, it re-takes the locks', { pod: action.podName, podNode: node });
          await this.custom.patchNamespacedCustomObjectStatus(
            { group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name, fieldManager: 'lockmig-agent',
              body: { status: { agent: { state: 'Dumped', handoverSocket: null, message: `${cp.status?.agent?.message ?? ''}; the restore pod ${action.podName} runs on node ${node}: it re-takes every lock from the images`, heartbeatTime: new Date(this.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z') } } } },
            setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
          );
          return;
        }
        if (node) m.placed = true;
        const uid = pod && cgroupPodUID(pod);
        if (!uid) {
          m.waitingSince ??= this.clock.now();
          if (this.clock.now() - m.waitingSince > (this.o.restorePodWaitMs ?? 60_000)) {
            log.warn('restore pod never appeared', { pod: action.podName });
            return;
          }
          return { requeueAfterMs: 250 };
        }
        const first = m.list.some((x) => x.target() !== uid);
        m.podUID = pod?.metadata?.uid;
        for (const x of m.list) x.setTarget(uid);
        if (first || node) log.info('handover target identified', { pod: action.podName, podUID: uid, node: node ?? '(not scheduled yet)', entries: m.list.map((x) => x.checkpoint) });
        // not scheduled yet: look again, it may land on another node (less often while it stays pending)
        return node ? undefined : { requeueAfterMs: first ? 250 : 1000 };
      }
    }
  }

  /**
   * The vault lost a checkpoint's descriptions (this agent restarted) but its source pod still runs
   * here and no restore pod was admitted yet: nothing was free (the source holds its own locks), so
   * dump it again and take its descriptions into the vault once more, rather than report a loss and
   * make the restore pod re-take locks the handover could still carry. The images are written again
   * (atomically; what a restore pod will read matches what the vault holds). Returns false when that
   * is not possible (the caller reports HandoverLost).
   */
  private async resumeHandover(cp: LockCheckpoint, log: Logger): Promise<boolean> {
    const st = cp.status;
    if (!cp.spec.sourcePodName || !st?.sourcePodUID || st.restoredPod?.name || !this.o.vault) return false;
    // only a vault that never had them (a restart); one that let them go (hold time over) meant to
    const prefix = `${cp.metadata.namespace}/${cp.metadata.name}.`;
    if (this.o.vault.list().some((e) => e.name.startsWith(prefix))) return false;
    const pod = await this.getPod(cp.metadata.namespace, cp.spec.sourcePodName);
    if (!pod || pod.metadata?.uid !== st.sourcePodUID || pod.spec?.nodeName !== this.o.node || pod.status?.phase !== 'Running') return false;
    const out = dumpForCheckpoint(cp, pod, { ...this.o, newMatcher: (k) => new RestorePodMatcher(k, parseKubeletCgroupPath) }, new Date(this.clock.now()));
    if (out.report.state !== 'HandoverReady') {
      // e.g. the source is exiting: whatever the vault took again, it goes; the loss is reported
      for (const m of out.matchers) this.o.vault.release(m.checkpoint, 'cancelled');
      log.info('could not take the descriptions again', { state: out.report.state, reason: out.report.reason, error: out.report.message });
      return false;
    }
    const key = keyOf(cp.metadata.namespace, cp.metadata.name);
    const uid = cp.metadata.uid ?? key;
    this.keep(cp, uid, key, out);
    if (out.configMaps) await this.applyConfigMaps(cp, out.configMaps);
    const message = `${out.report.message ?? ''}; the agent restarted while its vault held the descriptions and the source pod still ran: it took them again (nothing was free)`;
    await this.patchAgent(cp, { ...out.report, message });
    this.metrics.handoverResumed.inc();
    log.info('vault lost its descriptions, the source still runs: took them again', { event: 'handover-resumed', locks: out.report.locks?.total });
    void this.o.events?.record(this.ref(cp), 'Normal', 'HandoverResumed', `agent on ${this.o.node}: restarted while holding the descriptions; the source pod still ran, so they were taken again (nothing was free)`);
    return true;
  }

  /** What this process remembers of a dump: its report (written, or retried), its vault matchers, the source's exit watch. */
  private keep(cp: LockCheckpoint, uid: string, key: string, out: DumpOutcome): { report: AgentReport; configMaps?: readonly ConfigMapPlan[] } {
    const entry = { report: out.report, ...(out.configMaps ? { configMaps: out.configMaps } : {}) };
    this.done.set(uid, entry);
    if (out.matchers.length > 0) this.matchers.set(key, { uid, list: [...out.matchers] });
    if (out.lockPids.length > 0) this.watchSourceExit(cp, out.lockPids);
    return entry;
  }

  /**
   * api storage: the images as ConfigMaps owned by the checkpoint (server-side apply: created or
   * brought up to date in one idempotent request; deleted by the garbage collector with it).
   */
  private async applyConfigMaps(cp: LockCheckpoint, plans: readonly ConfigMapPlan[]): Promise<void> {
    for (const p of plans) {
      const body = {
        apiVersion: 'v1', kind: 'ConfigMap',
        metadata: {
          name: p.name, namespace: cp.metadata.namespace,
          labels: { 'app.kubernetes.io/managed-by': 'lockmig', 'lockmig.dev/checkpoint-uid': cp.metadata.uid ?? '' },
          annotations: { 'lockmig.dev/checkpoint': cp.metadata.name },
          ownerReferences: [{ apiVersion: API_VERSION, kind: KIND, name: cp.metadata.name, uid: cp.metadata.uid!, controller: true }],
        },
        binaryData: p.binaryData,
      };
      await this.core.patchNamespacedConfigMap(
        { name: p.name, namespace: cp.metadata.namespace, body, fieldManager: 'lockmig-agent', force: true },
        setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
      );
    }
  }

  /** Report when the dumped lock owners exit: the start of the restore's lock-free window. */
  private watchSourceExit(cp: LockCheckpoint, pids: readonly number[]): void {
    const ns = cp.metadata.namespace;
    const name = cp.metadata.name;
    const key = keyOf(ns, name);
    this.exitWatcher.watch(key, pids, (r) => {
      this.exits.set(key, r);
      const sourceExit = { time: r.time, monotonicNs: r.monotonicNs.toString(), ...(r.bootID ? { bootID: r.bootID } : {}) };
      this.log.info('source process exited', { namespace: ns, name, pid: r.pid, late: r.late, time: r.time });
      void this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name, fieldManager: 'lockmig-agent', body: { status: { agent: { sourceExit } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ).catch((err: unknown) => this.log.warn('could not record the source exit', { namespace: ns, name, error: (err as Error).message }));
    });
  }

  private ref(cp: LockCheckpoint) {
    return { apiVersion: API_VERSION, kind: KIND, name: cp.metadata.name, namespace: cp.metadata.namespace, ...(cp.metadata.uid ? { uid: cp.metadata.uid } : {}) };
  }
}

export type { VaultPort };
