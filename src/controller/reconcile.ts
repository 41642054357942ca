/**
 * The controller's decision function: PURE. Given a LockCheckpoint as the API server returned it,
 * the source pod (or undefined), the current time and the configuration, it works out the desired
 * state from scratch (level-based) and returns what to write:
 *   - a JSON merge patch for the status subresource (undefined when nothing changes: no hot loop),
 *   - label and finalizer changes for a metadata merge patch,
 *   - whether to delete the object (TTL),
 *   - Events to emit, and when to look again (deadlines).
 * It never performs I/O; `writer.ts` applies the result. Because every deadline is computed from
 * timestamps stored in status (startTime, dispatchTime, agent.heartbeatTime, condition
 * lastTransitionTime) a restarted controller resumes exactly where the previous one stopped.
 *
 * The protocol with the agent and the webhook is written down in docs/api.md.
 */
import {
  ANNOTATION_RESTORE_FROM, CONDITION, FINALIZER_IMAGES, LABEL_NODE, REASON, isFinished, validateSpec, validateStatus,
  type AgentReport, type Condition, type FieldError, type KubeletCheckpointSource, type LockCheckpointSpec, type LockCheckpointStatus, type LockCounts, type Phase, type SourceInfo,
} from '../api/lockcheckpoint.js';
import { MAX_CONDITIONS, capConditions, fitMessage, replacing } from './status-write.js';
import { staleClaim } from '../api/claim.js';

/** Timestamps from client-node may be Date objects (typed API) or RFC 3339 strings (watch, custom objects). */
type Time = string | Date;

/** The parts of a LockCheckpoint the controller reads; raw JSON from the API server fits. */
export interface RawCheckpoint {
  readonly metadata?: {
    readonly name?: string;
    readonly namespace?: string;
    readonly uid?: string;
    readonly generation?: number;
    readonly resourceVersion?: string;
    readonly creationTimestamp?: Time;
    readonly deletionTimestamp?: Time;
    readonly labels?: Readonly<Record<string, string>>;
    readonly finalizers?: readonly string[];
  };
  readonly spec?: unknown;
  readonly status?: unknown;
}

/** The parts of a core/v1 Pod the controller reads (a V1Pod fits). */
export interface PodView {
  readonly metadata?: {
    readonly uid?: string; readonly name?: string; readonly deletionTimestamp?: Time; readonly annotations?: Readonly<Record<string, string>>;
    readonly labels?: Readonly<Record<string, string>>;
    readonly ownerReferences?: readonly { readonly kind: string; readonly name: string; readonly uid: string; readonly controller?: boolean }[];
  };
  readonly spec?: { readonly nodeName?: string; readonly containers?: readonly { readonly name: string }[]; readonly initContainers?: readonly { readonly name: string }[] };
  readonly status?: { readonly phase?: string };
}

/**
 * What the controller knows of the node a kubelet checkpoint source names (spec.source.kubeletCheckpoint.node):
 * whether the Node object exists. Looked up only while such a checkpoint is not dispatched yet.
 */
export interface NodeView {
  readonly exists: boolean;
}

export interface ReconcileConfig {
  /** how long a source pod (or a kubelet checkpoint source's node) may be missing / unscheduled / not running before Failed */
  readonly podWaitTimeoutMs: number;
  /** how long after dispatch the agent must answer (status.agent present) */
  readonly agentAcceptTimeoutMs: number;
  /** how long a dump may go without an agent heartbeat */
  readonly dumpTimeoutMs: number;
  /** how long a source pod may be gone while the agent dumps before Failed/SourcePodNotFound */
  readonly podGoneGraceMs: number;
  /** how long deletion waits for the agent to confirm image deletion */
  readonly imageDeletionTimeoutMs: number;
  /** poll interval while waiting for something without a watch event (pod, agent) */
  readonly pollIntervalMs: number;
  /** how long an admitted restore pod may stay uncreated before its claim lapses (api/claim.ts) */
  readonly claimGraceMs: number;
}

export const DEFAULT_CONFIG: ReconcileConfig = {
  podWaitTimeoutMs: 120_000,
  agentAcceptTimeoutMs: 60_000,
  dumpTimeoutMs: 300_000,
  podGoneGraceMs: 15_000,
  imageDeletionTimeoutMs: 300_000,
  claimGraceMs: 120_000,
  pollIntervalMs: 5_000,
};

export interface EventSpec {
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

export interface ReconcileResult {
  /** merge patch for the status subresource: `{status: statusPatch}`; undefined = no status write */
  readonly statusPatch?: Partial<Record<keyof LockCheckpointStatus, unknown>>;
  /** the full status the controller wants (for logging and tests) */
  readonly status: LockCheckpointStatus;
  /** labels to set (merge) on metadata */
  readonly labels?: Readonly<Record<string, string>>;
  readonly finalizer?: 'add' | 'remove';
  /** TTL expired: delete the object */
  readonly delete?: boolean;
  readonly events: readonly EventSpec[];
  /** look again after this long (a deadline or a poll); undefined = wait for watch events */
  readonly requeueAfterMs?: number;
  /** set when the Ready reason changed: for metrics and logs */
  readonly transition?: { readonly from?: string; readonly to: string; readonly phase: Phase };
  /** lock counts that just reached Dumped/HandoverReady (count once for the locks-moved metric) */
  readonly locksMoved?: LockCounts;
}

/**
 * Longest requeue: a deadline further away (a TTL of days, a heartbeat stamped in the future by a
 * skewed clock) is looked at again hourly instead. Being level-based, an early pass only finds
 * the deadline still ahead. It also keeps every delay far below 2^31-1 ms, beyond which a Node.js
 * timer fires after 1 ms: a 30-day TTL used to reconcile the object in a hot loop.
 */
export const MAX_REQUEUE_MS = 3_600_000;

function ms(t: Time | undefined): number | undefined {
  if (t === undefined || t === null) return undefined;
  const v = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isNaN(v) ? undefined : v;
}

function iso(t: number): string {
  // metav1.Time has second precision on the wire; keep what we store comparable
  return new Date(Math.floor(t / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const FAILURE_REASONS = new Set<string>([
  REASON.Failed, REASON.InvalidSpec, REASON.RestoreFailed, REASON.SourcePodNotFound, REASON.SourcePodReplaced, REASON.PodNotRunning,
  REASON.PodNotScheduled, REASON.AgentUnavailable, REASON.AgentFailed, REASON.Timeout, REASON.NodeNotFound,
]);

interface Decision {
  phase: Phase;
  reason: string;
  message: string;
  /** false: keep retrying until a deadline */
  requeueAfterMs?: number;
}

/** deep equality for JSON values */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    if (ka.length !== kb.length) return false;
    return ka.every((k) => jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * Sets a condition the metav1 way: lastTransitionTime changes only when `status` changes.
 */
export function setCondition(list: readonly Condition[], c: Omit<Condition, 'lastTransitionTime'>, now: number): Condition[] {
  const prev = list.find((x) => x.type === c.type);
  const next: Condition = {
    type: c.type,
    status: c.status,
    observedGeneration: c.observedGeneration,
    lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : iso(now),
    reason: c.reason,
    message: fitMessage(c.message),
  };
  const out = list.filter((x) => x.type !== c.type);
  out.push(next);
  return out.sort((a, b) => a.type.localeCompare(b.type));
}

function describeErrors(errs: readonly FieldError[]): string {
  return errs.map((e) => `${e.field}: ${e.message}`).join('; ');
}

function podUid(pod: PodView | undefined): string | undefined {
  return pod?.metadata?.uid;
}

/** Is the agent report usable: from the dispatched node, about the dispatched pod? */
function agentReportFor(status: LockCheckpointStatus, agentErrors: boolean): AgentReport | undefined {
  const a = status.agent;
  if (!a || agentErrors) return undefined;
  if (!status.nodeName || a.nodeName !== status.nodeName) return undefined;
  if (status.sourcePodUID && a.podUID && a.podUID !== status.sourcePodUID) return undefined;
  return a;
}

function counts(l: LockCounts | undefined): LockCounts | undefined {
  if (!l) return undefined;
  const posix = l.posix ?? 0;
  const flock = l.flock ?? 0;
  const ofd = l.ofd ?? 0;
  const lease = l.lease ?? 0;
  // each count is a safe integer (validateStatus); their sum need not be, and an unsafe total fails
  // validation (and loses exactness) on the next pass: saturate it
  return { posix, flock, ofd, lease, total: l.total ?? Math.min(Number.MAX_SAFE_INTEGER, posix + flock + ofd + lease) };
}

/** The decision for an object that is not being deleted. */
/**
 * `restorePod` is the pod named by status.restoredPod (undefined when there is none or it does
 * not exist): its UID is recorded, and while it lives without holding its locks the images are
 * not expired by the TTL.
 */
/**
 * `sourceNode` is what is known of the node a kubelet checkpoint source names (spec.source): the
 * checkpoint waits (NodeNotFound) while it does not exist. Unused for a source pod.
 */
export function reconcile(
  ck: RawCheckpoint, pod: PodView | undefined, nowDate: Date, config: ReconcileConfig = DEFAULT_CONFIG, restorePod?: PodView, sourceNode?: NodeView,
): ReconcileResult {
  const now = nowDate.getTime();
  const md = ck.metadata ?? {};
  const generation = md.generation ?? 1;
  const rawStatus = isObj(ck.status) ? ck.status : {};
  const statusErrors = validateStatus(rawStatus);
  const agentErrors = statusErrors.some((e) => e.field.startsWith('status.agent'));
  // The CRD schema guarantees the shape of everything but a hand-edited status; fields that fail
  // validation outside status.agent are dropped so a bad write cannot wedge the controller.
  let prev: LockCheckpointStatus = sanitizeStatus(rawStatus, statusErrors);
  const events: EventSpec[] = [];
  const finalizers = md.finalizers ?? [];
  const hasFinalizer = finalizers.includes(FINALIZER_IMAGES);

  // ---- deletion: the finalizer protocol (docs/api.md "Finalizer / deletion")
  if (md.deletionTimestamp !== undefined && md.deletionTimestamp !== null) {
    if (!hasFinalizer) return { status: prev, events };
    if (!prev.nodeName) {
      return { status: prev, finalizer: 'remove', events: [{ type: 'Normal', reason: 'Finalized', message: 'never dispatched to a node: no images to delete' }] };
    }
    if (prev.agent?.imagesDeleted === true) {
      return {
        status: prev, finalizer: 'remove',
        events: [{ type: 'Normal', reason: 'ImagesDeleted', message: `agent on node ${prev.nodeName} deleted the images${prev.imageLocation ? ` at ${prev.imageLocation}` : ''}` }],
      };
    }
    const since = ms(md.deletionTimestamp) ?? now;
    const deadline = since + config.imageDeletionTimeoutMs;
    if (now >= deadline) {
      return {
        status: prev, finalizer: 'remove',
        events: [{
          type: 'Warning', reason: 'ImagesNotDeleted',
          message: `agent on node ${prev.nodeName} did not confirm deleting the images within ${Math.round(config.imageDeletionTimeoutMs / 1000)}s; removing the finalizer anyway${prev.imageLocation ? `, images may remain at ${prev.imageLocation}` : ''}`,
        }],
      };
    }
    return { status: prev, events, requeueAfterMs: Math.min(deadline - now, config.pollIntervalMs * 6) };
  }

  // A claim whose restore pod is gone before it held the locks lapses (api/claim.ts): the
  // checkpoint can restore into another pod; the agent retargets its vault entries then.
  const lapsed = prev.phase !== 'Failed' ? staleClaim(prev, restorePod ?? null, now, config.claimGraceMs) : undefined;
  let claimRecheckMs: number | undefined;
  if (lapsed) {
    events.push({ type: 'Warning', reason: 'RestorePodGone', message: `${lapsed}: the checkpoint can restore into another pod` });
    const { restoredPod: _rp, restore: _rr, ...rest } = prev;
    prev = rest;
  } else if (prev.restoredPod?.name && !prev.restoredPod.uid && !restorePod) {
    // admitted but not (yet) created: look again when the claim would lapse
    const t = ms(prev.restoredPod.time);
    if (t !== undefined) claimRecheckMs = Math.max(1000, t + config.claimGraceMs - now + 1000);
  }

  const startMs = ms(prev.startTime) ?? now;
  const base: Mutable<LockCheckpointStatus> = { ...prev, observedGeneration: generation, startTime: prev.startTime ?? iso(now) };
  let labels: Record<string, string> | undefined;
  let finalizer: 'add' | undefined;
  let locksMoved: LockCounts | undefined;
  let locksHeld: { status: 'True' | 'False'; reason: string; message: string } | undefined;

  const specErrors = validateSpec(ck.spec);
  const spec = ck.spec as LockCheckpointSpec;
  const wasFailed = prev.phase === 'Failed';
  const prevReady = prev.conditions?.find((c) => c.type === CONDITION.Ready);

  let d: Decision;
  if (wasFailed) {
    // Failed is terminal: keep reason and message, only TTL applies.
    d = { phase: 'Failed', reason: prevReady?.reason ?? REASON.Failed, message: prevReady?.message ?? prev.message ?? 'failed' };
  } else if (specErrors.length > 0) {
    d = { phase: 'Failed', reason: REASON.InvalidSpec, message: `invalid spec: ${describeErrors(specErrors)}` };
  } else {
    const agent = agentReportFor(prev, agentErrors);
    if (agentErrors && prev.agent) events.push({ type: 'Warning', reason: 'InvalidAgentReport', message: `ignoring status.agent: ${describeErrors(statusErrors.filter((e) => e.field.startsWith('status.agent')))}` });
    if (agent && (agent.state === 'Dumped' || agent.state === 'HandoverReady')) {
      // ---- done: copy the agent's summary; the pod may be gone now, that is the point of a migration.
      const c = counts(agent.locks);
      if (prev.phase !== 'Dumped' && prev.phase !== 'HandoverReady' && prev.phase !== 'Restored') locksMoved = c;
      base.locks = c;
      if (agent.files !== undefined) base.files = agent.files;
      if (agent.skippedFds !== undefined) base.skippedFds = agent.skippedFds;
      if (agent.imageLocation !== undefined) base.imageLocation = agent.imageLocation;
      const done = prev.completionTime ?? agent.completionTime ?? iso(now);
      base.completionTime = done;
      const dumpMs = agent.dumpMilliseconds ?? diff(agent.completionTime, agent.startTime);
      const created = ms(md.creationTimestamp);
      const doneMs = ms(done);
      base.durations = {
        ...(dumpMs !== undefined ? { dumpMilliseconds: dumpMs } : {}),
        ...(created !== undefined && doneMs !== undefined ? { totalMilliseconds: Math.max(0, doneMs - created) } : {}),
      };
      const total = c?.total ?? 0;
      if (prev.restoredPod?.name) {
        const rp = prev.restoredPod;
        const rr = prev.restore?.podName === rp.name && (!prev.restore.podUID || !rp.uid || prev.restore.podUID === rp.uid) ? prev.restore : undefined;
        const where = `pod ${rp.name}${rr?.nodeName ?? rp.nodeName ? ` on node ${rr?.nodeName ?? rp.nodeName}` : ''}`;
        if (rr?.state === 'Held') {
          d = { phase: 'Restored', reason: REASON.Restored, message: `restored into ${where}: ${rr.message ?? `${rr.locks?.total ?? 0} lock(s) held`}` };
          locksHeld = { status: 'True', reason: REASON.LocksHeld, message: rr.message ?? `${rr.locks?.total ?? 0} lock(s) held by ${where}` };
        } else if (rr?.state === 'Failed') {
          d = { phase: 'Restoring', reason: REASON.RestoreFailed, message: rr.message ?? `the restore shim of ${where} failed` };
          locksHeld = { status: 'False', reason: REASON.RestoreFailed, message: d.message };
        } else {
          d = { phase: 'Restoring', reason: REASON.Restoring, message: `${where} was admitted; waiting for its restore shim to hold the ${total} lock(s)` };
          locksHeld = { status: 'False', reason: REASON.Restoring, message: d.message };
        }
      } else if (agent.state === 'HandoverReady') {
        d = { phase: 'HandoverReady', reason: REASON.HandoverReady, message: `${total} lock(s) recorded; the agent on node ${prev.nodeName} holds the open file descriptions for handover` };
      } else {
        d = { phase: 'Dumped', reason: REASON.Dumped, message: `${total} lock(s) in ${agent.files ?? 0} file(s) recorded${agent.imageLocation ? ` at ${agent.imageLocation}` : ''}` };
      }
    } else if (agent && agent.state === 'Failed') {
      d = { phase: 'Failed', reason: REASON.AgentFailed, message: `agent on node ${agent.nodeName} failed${agent.reason ? ` (${agent.reason})` : ''}: ${agent.message ?? 'no message'}` };
    } else if (!prev.nodeName && spec.source?.kubeletCheckpoint) {
      // ---- a kubelet checkpoint archive already on a node: no pod to resolve, dispatch to that node.
      const kc = spec.source.kubeletCheckpoint;
      d = decideArchiveUndispatched(kc, sourceNode, now, startMs, config);
      if (d.phase === 'Dumping') {
        base.nodeName = kc.node;
        base.dispatchTime = iso(now);
        labels = { [LABEL_NODE]: kc.node };
        finalizer = 'add';
        events.push({ type: 'Normal', reason: REASON.Dispatched, message: `dispatched to the agent on node ${kc.node} (kubelet checkpoint ${kc.file})` });
      }
    } else if (!prev.nodeName) {
      // ---- not dispatched yet: resolve the pod.
      d = decideUndispatched(spec, pod, now, startMs, config);
      if (d.phase === 'Dumping' && pod?.spec?.nodeName && pod.metadata?.uid) {
        base.nodeName = pod.spec.nodeName;
        base.sourcePodUID = pod.metadata.uid;
        base.dispatchTime = iso(now);
        base.source = sourceInfo(pod);
        labels = { [LABEL_NODE]: pod.spec.nodeName };
        finalizer = 'add';
        events.push({ type: 'Normal', reason: REASON.Dispatched, message: `dispatched to the agent on node ${pod.spec.nodeName} (pod ${spec.sourcePodName}, uid ${pod.metadata.uid})` });
      }
    } else {
      // ---- dispatched, the agent has not finished.
      d = decideInFlight(prev, agent, pod, prevReady, now, config, !!spec.source?.kubeletCheckpoint);
    }
  }

  // the CRD caps status.message and condition messages at 32768 characters: a longer one (an
  // agent's message of that size behind our prefix, a spec with thousands of errors) would make
  // the API server refuse every status write, leaving the object stuck short of Failed
  d.message = fitMessage(d.message);

  // Dispatched objects always carry the node label and the finalizer (repair after a crash
  // between the metadata and the status write, or a hand edit).
  if (base.nodeName) {
    if (md.labels?.[LABEL_NODE] !== base.nodeName) labels = { [LABEL_NODE]: base.nodeName };
    if (!hasFinalizer) finalizer = 'add';
  }

  if ((d.phase === 'Failed') && !base.completionTime) base.completionTime = iso(now);
  if (d.phase === 'Failed' && base.durations === undefined) {
    const created = ms(md.creationTimestamp);
    const doneMs = ms(base.completionTime);
    if (created !== undefined && doneMs !== undefined) base.durations = { totalMilliseconds: Math.max(0, doneMs - created) };
  }

  // ---- conditions
  const ready = d.phase === 'Dumped' || d.phase === 'HandoverReady' || d.phase === 'Restoring' || d.phase === 'Restored';
  let conds = setCondition(prev.conditions ?? [], { type: CONDITION.Ready, status: ready ? 'True' : 'False', observedGeneration: generation, reason: d.reason, message: d.message }, now);
  conds = setCondition(conds, base.nodeName
    ? { type: CONDITION.Dispatched, status: 'True', observedGeneration: generation, reason: REASON.Dispatched, message: `assigned to the agent on node ${base.nodeName}` }
    : { type: CONDITION.Dispatched, status: 'False', observedGeneration: generation, reason: REASON.NotDispatched, message: 'not assigned to a node' }, now);
  // Keep the Ready lastTransitionTime when only the reason changes? No: a reason change is a
  // transition we time bounded waits from (SourcePodNotFound while Dumping), so restamp it.
  if (prevReady && prevReady.reason !== d.reason) {
    conds = conds.map((c) => (c.type === CONDITION.Ready ? { ...c, lastTransitionTime: iso(now) } : c));
  }
  if (locksHeld) conds = setCondition(conds, { type: CONDITION.LocksHeld, observedGeneration: generation, ...locksHeld }, now);
  // the vault lost the descriptions it held for a handover: those OFD/flock locks were free for a while
  const lost = base.agent?.handoverLostTime;
  if (lost) {
    conds = setCondition(conds, { type: CONDITION.HandoverLost, status: 'True', observedGeneration: generation, reason: 'HandoverLost',
      message: `the agent's vault lost the held open file descriptions at ${lost} (agent restart or hold time over): restore pods re-take those locks, which were free in between` }, now);
  }
  const capped = capConditions(conds, [CONDITION.Ready, CONDITION.Dispatched]);
  if (capped.dropped.length) {
    conds = capped.conditions;
    events.push({ type: 'Warning', reason: 'ConditionsDropped', message: `status.conditions holds at most ${MAX_CONDITIONS} entries: dropped ${capped.dropped.join(', ')} to keep Ready and Dispatched` });
  }
  base.conditions = conds;
  base.phase = d.phase;
  base.message = d.message;

  let transition: ReconcileResult['transition'];
  if (!prevReady || prevReady.reason !== d.reason || prev.phase !== d.phase) {
    transition = { from: prevReady?.reason, to: d.reason, phase: d.phase };
    const warn = FAILURE_REASONS.has(d.reason);
    // Dispatch already has its own event; Dumping right after it would only repeat it.
    if (!(d.reason === REASON.Dumping && events.some((e) => e.reason === REASON.Dispatched))) {
      events.push({ type: warn ? 'Warning' : 'Normal', reason: d.reason, message: d.message });
    }
  }

  // ---- TTL after finish
  let del = false;
  let requeue = minDefined(d.requeueAfterMs, claimRecheckMs);
  const ttl = !specErrors.length ? spec.ttlSecondsAfterFinished : undefined;
  // A restore pod that lives but does not hold its locks yet still needs the images.
  const restoreInFlight = !!prev.restoredPod?.name && prev.restore?.state !== 'Held' && restorePod !== undefined && !restorePod.metadata?.deletionTimestamp;
  if (isFinished(d.phase) && ttl !== undefined) {
    const fin = Math.max(ms(base.completionTime) ?? now, ms(prev.restoredPod?.time) ?? 0, ms(prev.restore?.heldTime) ?? 0);
    const at = fin + ttl * 1000;
    if (now >= at && restoreInFlight) {
      requeue = minDefined(requeue, config.pollIntervalMs);
    } else if (now >= at) {
      del = true;
      events.push({ type: 'Normal', reason: 'Expired', message: `deleting: finished ${Math.round((now - fin) / 1000)}s ago, ttlSecondsAfterFinished is ${ttl}` });
    } else {
      requeue = minDefined(requeue, at - now);
    }
  }

  let statusPatch = diffStatus(base, rawStatus);
  if (lapsed) statusPatch = { ...(statusPatch ?? {}), restoredPod: null, restore: null };
  // The webhook records the restore pod at admission, before the API server gives it a UID.
  const rpUID = restorePod?.metadata?.uid;
  // (never the source pod still terminating under the same name: a StatefulSet's db-0)
  const admitted = restorePod?.metadata?.name === prev.restoredPod?.name && rpUID !== prev.sourcePodUID && !restorePod?.metadata?.deletionTimestamp
    && (restorePod?.metadata?.annotations?.[ANNOTATION_RESTORE_FROM] ?? '').split('/').pop() === md.name;
  if (prev.restoredPod?.name && !prev.restoredPod.uid && rpUID && admitted) {
    statusPatch = { ...(statusPatch ?? {}), restoredPod: { uid: rpUID } };
  }
  return {
    status: base,
    ...(statusPatch ? { statusPatch } : {}),
    ...(labels ? { labels } : {}),
    ...(finalizer ? { finalizer } : {}),
    ...(del ? { delete: true } : {}),
    events,
    ...(requeue !== undefined ? { requeueAfterMs: Math.min(MAX_REQUEUE_MS, Math.max(0, requeue)) } : {}),
    ...(transition ? { transition } : {}),
    ...(locksMoved ? { locksMoved } : {}),
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function diff(a: string | undefined, b: string | undefined): number | undefined {
  const x = ms(a);
  const y = ms(b);
  return x !== undefined && y !== undefined ? Math.max(0, x - y) : undefined;
}

function minDefined(a: number | undefined, b: number): number;
function minDefined(a: number | undefined, b: number | undefined): number | undefined;
function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  return b === undefined ? a : Math.min(a, b);
}

function decideUndispatched(spec: LockCheckpointSpec, pod: PodView | undefined, now: number, startMs: number, config: ReconcileConfig): Decision {
  const waited = now - startMs;
  const left = config.podWaitTimeoutMs - waited;
  const wait = (reason: string, message: string): Decision =>
    left <= 0
      ? { phase: 'Failed', reason, message: `${message}; gave up after ${Math.round(config.podWaitTimeoutMs / 1000)}s` }
      : { phase: 'Pending', reason, message, requeueAfterMs: Math.min(config.pollIntervalMs, left) };
  if (!pod) return wait(REASON.SourcePodNotFound, `source pod ${spec.sourcePodName} not found`);
  const uid = podUid(pod);
  if (spec.sourcePodUID && uid !== spec.sourcePodUID) {
    return { phase: 'Failed', reason: REASON.SourcePodReplaced, message: `pod ${spec.sourcePodName} has uid ${uid ?? '(none)'}, but spec.sourcePodUID pins ${spec.sourcePodUID}: the pod was replaced` };
  }
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') {
    return { phase: 'Failed', reason: REASON.PodNotRunning, message: `source pod ${spec.sourcePodName} has terminated (phase ${phase}): its processes and locks are gone` };
  }
  if (pod.metadata?.deletionTimestamp) return wait(REASON.PodNotRunning, `source pod ${spec.sourcePodName} is being deleted`);
  if (!pod.spec?.nodeName) return wait(REASON.PodNotScheduled, `source pod ${spec.sourcePodName} is not scheduled to a node yet`);
  if (phase !== 'Running') return wait(REASON.PodNotRunning, `source pod ${spec.sourcePodName} is not running yet (phase ${phase ?? 'unknown'})`);
  if (spec.containers && spec.containers.length > 0 && pod.spec.containers) {
    // init containers count too: native sidecars (restartPolicy Always) run beside the app and may hold locks
    const names = new Set([...pod.spec.containers, ...(pod.spec.initContainers ?? [])].map((c) => c.name));
    const missingC = spec.containers.filter((c) => !names.has(c));
    if (missingC.length) {
      return { phase: 'Failed', reason: REASON.InvalidSpec, message: `spec.containers names ${missingC.map((c) => `"${c}"`).join(', ')}, not in pod ${spec.sourcePodName} (containers: ${[...names].join(', ')})` };
    }
  }
  return { phase: 'Dumping', reason: REASON.Dumping, message: `waiting for the agent on node ${pod.spec.nodeName}`, requeueAfterMs: config.agentAcceptTimeoutMs };
}

/**
 * A kubelet checkpoint source: wait (bounded, like a missing source pod) until the node it names
 * exists, then dispatch to its agent. Whether the archive is there only that agent can tell.
 */
function decideArchiveUndispatched(kc: KubeletCheckpointSource, node: NodeView | undefined, now: number, startMs: number, config: ReconcileConfig): Decision {
  const left = config.podWaitTimeoutMs - (now - startMs);
  if (node && !node.exists) {
    const message = `node ${kc.node} named by spec.source.kubeletCheckpoint.node does not exist (kubectl get node ${kc.node})`;
    return left <= 0
      ? { phase: 'Failed', reason: REASON.NodeNotFound, message: `${message}; gave up after ${Math.round(config.podWaitTimeoutMs / 1000)}s` }
      : { phase: 'Pending', reason: REASON.NodeNotFound, message, requeueAfterMs: Math.min(config.pollIntervalMs, left) };
  }
  return { phase: 'Dumping', reason: REASON.Dumping, message: `waiting for the agent on node ${kc.node} to import kubelet checkpoint ${kc.file}`, requeueAfterMs: config.agentAcceptTimeoutMs };
}

function decideInFlight(
  prev: LockCheckpointStatus, agent: AgentReport | undefined, pod: PodView | undefined, prevReady: Condition | undefined, now: number, config: ReconcileConfig,
  archive = false,
): Decision {
  const node = prev.nodeName as string;
  const uid = podUid(pod);
  // a kubelet checkpoint source has no pod: only the agent's progress counts
  if (archive) pod = undefined;
  if (!archive && pod && prev.sourcePodUID && uid !== prev.sourcePodUID) {
    return { phase: 'Failed', reason: REASON.SourcePodReplaced, message: `source pod was replaced while the dump was in flight (uid ${prev.sourcePodUID} at dispatch, now ${uid ?? '(none)'})` };
  }
  if (!pod && !archive) {
    // Bounded grace: the agent may still report a dump it finished just before the pod went away.
    const since = prevReady?.reason === REASON.SourcePodNotFound ? (ms(prevReady.lastTransitionTime) ?? now) : now;
    const left = since + config.podGoneGraceMs - now;
    if (left <= 0) return { phase: 'Failed', reason: REASON.SourcePodNotFound, message: `source pod disappeared while the agent on node ${node} was dumping` };
    return { phase: 'Dumping', reason: REASON.SourcePodNotFound, message: `source pod disappeared while the agent on node ${node} was dumping; waiting for the agent's report`, requeueAfterMs: Math.min(left, config.pollIntervalMs) };
  }
  if (!agent) {
    const dispatched = ms(prev.dispatchTime) ?? now;
    const left = dispatched + config.agentAcceptTimeoutMs - now;
    if (left <= 0) return { phase: 'Failed', reason: REASON.AgentUnavailable, message: `the agent on node ${node} did not answer within ${Math.round(config.agentAcceptTimeoutMs / 1000)}s of dispatch (is the lockmig agent DaemonSet running there?)` };
    return { phase: 'Dumping', reason: REASON.Dumping, message: `waiting for the agent on node ${node}`, requeueAfterMs: left };
  }
  // agent.state === 'Dumping'
  const beat = ms(agent.heartbeatTime) ?? ms(agent.startTime) ?? ms(prev.dispatchTime) ?? now;
  const left = beat + config.dumpTimeoutMs - now;
  if (left <= 0) return { phase: 'Failed', reason: REASON.Timeout, message: `the agent on node ${node} started dumping but sent no progress for ${Math.round(config.dumpTimeoutMs / 1000)}s` };
  return { phase: 'Dumping', reason: REASON.Dumping, message: `the agent on node ${node} is ${archive ? 'importing the kubelet checkpoint' : 'dumping'}`, requeueAfterMs: left };
}

/** Drops top-level status fields that failed validation (status.agent errors are handled separately). */
function sanitizeStatus(raw: Record<string, unknown>, errs: readonly FieldError[]): LockCheckpointStatus {
  if (errs.length === 0) return raw as LockCheckpointStatus;
  const bad = new Set(errs.filter((e) => !e.field.startsWith('status.agent')).map((e) => e.field.split(/[.[]/)[1]));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!bad.has(k)) out[k] = v;
  return out as LockCheckpointStatus;
}

/** Keys the controller owns in status (docs/api.md); agent and restoredPod are never written by it. */
const OWNED: readonly (keyof LockCheckpointStatus)[] = [
  'observedGeneration', 'conditions', 'phase', 'message', 'nodeName', 'sourcePodUID', 'imageLocation', 'locks', 'files',
  'skippedFds', 'startTime', 'dispatchTime', 'completionTime', 'durations', 'source',
];

/** Labels that differ between two pods of one workload (revision hashes, StatefulSet identity). */
const PER_POD_LABELS = new Set(['pod-template-hash', 'controller-revision-hash', 'statefulset.kubernetes.io/pod-name', 'apps.kubernetes.io/pod-index']);

/**
 * The source pod as a replacement must match it (spec.target.policy Workload): its controller —
 * a ReplicaSet named `<deployment>-<pod-template-hash>` stands for its Deployment, whose later
 * ReplicaSets carry other hashes — and its labels without the per-pod ones.
 */
export function sourceInfo(pod: PodView): SourceInfo {
  const md = pod.metadata ?? {};
  const owner = (md.ownerReferences ?? []).find((o) => o.controller);
  const hash = md.labels?.['pod-template-hash'];
  let workload: SourceInfo['workload'];
  if (owner?.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) workload = { kind: 'Deployment', name: owner.name.slice(0, -hash.length - 1) };
  else if (owner) workload = { kind: owner.kind, name: owner.name, uid: owner.uid };
  const labels = Object.fromEntries(Object.entries(md.labels ?? {}).filter(([k]) => !PER_POD_LABELS.has(k)));
  return {
    podName: md.name ?? '', podUID: md.uid ?? '',
    ...(workload ? { workload } : {}),
    ...(Object.keys(labels).length > 0 ? { labels } : {}),
  };
}

function diffStatus(next: LockCheckpointStatus, raw: Record<string, unknown>): ReconcileResult['statusPatch'] {
  const patch: Record<string, unknown> = {};
  for (const k of OWNED) {
    const a = raw[k];
    const b = next[k];
    if (!jsonEqual(a, b)) patch[k] = b === undefined ? null : replacing(a, b);
  }
  return Object.keys(patch).length ? patch : undefined;
}
