/**
 * The LockCheckpoint API (lockmig.dev/v1alpha1): TypeScript types, constants, and the shared
 * validators every enforcement point calls (controller, agent, webhook, CLI), so that all of
 * them apply exactly the same rule. This module is a leaf: it imports nothing from the project.
 *
 * Ownership of status fields (who writes what, always through the status subresource with a
 * JSON merge patch):
 *   - controller: phase, conditions, observedGeneration, nodeName, sourcePodUID, startTime,
 *     dispatchTime, completionTime, imageLocation, locks, files, skippedFds, durations
 *     (summary fields are copied from status.agent), and the `lockmig.dev/node` label and the
 *     `lockmig.dev/images` finalizer (metadata merge patch).
 *   - agent (on status.nodeName): status.agent only. See docs/api.md "Agent protocol".
 *   - webhook: status.restoredPod (name, nodeName, time at admission; the controller adds uid
 *     once the pod exists).
 *   - agent on the restore pod's node: status.restore only (the restore pod's own report of the
 *     locks it holds, read from the shim's state file, and the window they were free).
 */

export const GROUP = 'lockmig.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'LockCheckpoint';
export const LIST_KIND = 'LockCheckpointList';
export const PLURAL = 'lockcheckpoints';
export const SINGULAR = 'lockcheckpoint';
export const SHORT_NAMES: readonly string[] = ['lckpt', 'lckpts'];
export const CATEGORIES: readonly string[] = ['lockmig', 'all'];
export const CRD_NAME = `${PLURAL}.${GROUP}`;

/** Label the controller sets to dispatch a checkpoint to the agent on that node. */
export const LABEL_NODE = 'lockmig.dev/node';
/** Pod annotation that opts a new pod into restore from a checkpoint (same namespace). */
export const ANNOTATION_RESTORE_FROM = 'lockmig.dev/restore-from';
/**
 * Pod readiness gate (and pod condition type) the webhook adds to every restore pod: the agent on
 * the pod's node sets it True once the pod's shim reported every lock held, so the pod is not
 * Ready (no Service traffic, `kubectl wait` blocks) while its shim still waits for the locks.
 */
export const POD_CONDITION_LOCKS_HELD = 'lockmig.dev/locks-held';
/** Prefix of the per-container command annotation (`lockmig.dev/command.<container>`), a JSON array of strings. */
export const ANNOTATION_COMMAND_PREFIX = 'lockmig.dev/command.';
/** Finalizer that keeps the object until the agent has deleted the images. */
export const FINALIZER_IMAGES = 'lockmig.dev/images';
/** Where the kubelet writes checkpoint archives (KEP-2008; `<kubelet root dir>/checkpoints`), the agent's default `--kubelet-checkpoint-dir`. */
export const DEFAULT_KUBELET_CHECKPOINT_DIR = '/var/lib/kubelet/checkpoints';
/** Default node-local storage root of the agent (`lockmig agent --storage-root`). */
export const DEFAULT_STORAGE_ROOT = '/var/lib/lockmig/checkpoints';

export function commandAnnotation(container: string): string {
  return `${ANNOTATION_COMMAND_PREFIX}${container}`;
}

export const LOCK_KINDS = ['POSIX', 'FLOCK', 'OFD', 'LEASE'] as const;
export type ApiLockKind = (typeof LOCK_KINDS)[number];

export const RESTORE_MODES = ['Auto', 'Handover', 'Retake'] as const;
export type RestoreMode = (typeof RESTORE_MODES)[number];

export const PHASES = ['Pending', 'Dumping', 'Dumped', 'HandoverReady', 'Restoring', 'Restored', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];

/** Condition types. `Ready` is the summary: True once images (or a handover) are ready for a restore pod. */
export const CONDITION = {
  /** summary; reason is one of REASON */
  Ready: 'Ready',
  /** the controller assigned the checkpoint to the agent of status.nodeName */
  Dispatched: 'Dispatched',
  /** set once a restore pod was admitted: True when that pod's shim holds every lock (status.restore) */
  LocksHeld: 'LocksHeld',
  /** True (reason HandoverLost) once the agent's vault lost the descriptions it held before a restore pod took them: those OFD/flock locks were free for a while */
  HandoverLost: 'HandoverLost',
} as const;
export type ConditionType = (typeof CONDITION)[keyof typeof CONDITION];

/** Condition reasons (CamelCase, as metav1.Condition requires). */
export const REASON = {
  Pending: 'Pending',
  Dumping: 'Dumping',
  Dumped: 'Dumped',
  HandoverReady: 'HandoverReady',
  Restoring: 'Restoring',
  Restored: 'Restored',
  RestoreFailed: 'RestoreFailed',
  LocksHeld: 'LocksHeld',
  Failed: 'Failed',
  InvalidSpec: 'InvalidSpec',
  SourcePodNotFound: 'SourcePodNotFound',
  SourcePodReplaced: 'SourcePodReplaced',
  PodNotScheduled: 'PodNotScheduled',
  PodNotRunning: 'PodNotRunning',
  AgentUnavailable: 'AgentUnavailable',
  AgentFailed: 'AgentFailed',
  Timeout: 'Timeout',
  Dispatched: 'Dispatched',
  NotDispatched: 'NotDispatched',
  Deleting: 'Deleting',
  /** spec.source.kubeletCheckpoint.node names no Node object */
  NodeNotFound: 'NodeNotFound',
} as const;
export type Reason = (typeof REASON)[keyof typeof REASON];

// ---------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------

export interface ObjectMeta {
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
  readonly generation?: number;
  readonly creationTimestamp?: string;
  readonly deletionTimestamp?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly finalizers?: readonly string[];
}

export interface NodeLocalStorage {
  /**
   * Directory relative to `<storage root>/<namespace>/`; default: the checkpoint's name.
   * Never absolute, never containing `..`: namespaces cannot reach each other's images.
   */
  readonly path?: string;
}

/**
 * Images stored in the API: ConfigMaps owned by the LockCheckpoint (deleted with it), mounted
 * into the restore pod wherever it is scheduled — no shared filesystem needed.
 */
export interface ApiStorage {
  /**
   * When the images do not fit in the API (more than LIMITS.apiImageBytes): NodeLocal keeps them
   * on the source node (the restore pod is then pinned there), None fails the checkpoint.
   */
  readonly fallback?: 'NodeLocal' | 'None';
}

export interface PersistentVolumeClaimStorage {
  /** a PVC in the checkpoint's namespace */
  readonly claimName: string;
  /** directory inside the volume, relative; default: the checkpoint's name */
  readonly subPath?: string;
}

/** Exactly one member must be set; absent means `api: {}` (the CRD's default). */
export interface Storage {
  readonly api?: ApiStorage;
  readonly nodeLocal?: NodeLocalStorage;
  readonly persistentVolumeClaim?: PersistentVolumeClaimStorage;
}

export const TARGET_POLICIES = ['Annotated', 'SameName', 'Workload'] as const;
export type TargetPolicy = (typeof TARGET_POLICIES)[number];

/** Which new pod restores from the checkpoint. */
export interface TargetSpec {
  /**
   * Annotated (default): a pod annotated lockmig.dev/restore-from: <this checkpoint>.
   * SameName: the next pod created with the source pod's name (a StatefulSet's replacement).
   * Workload: the next pod created by the source pod's controller (StatefulSet, or the
   * ReplicaSets of its Deployment), matched by owner and labels.
   * A pod annotated with this checkpoint's name is always accepted too.
   */
  readonly policy?: TargetPolicy;
}

export interface RestoreSpec {
  /** Auto: hand over OFD/flock descriptions when the restore pod lands on the same node, else re-take. */
  readonly mode?: RestoreMode;
  /** how long the restore shim waits for each lock (seconds) */
  readonly timeoutSeconds?: number;
  /** how long the agent's vault keeps handed-over descriptions waiting for the restore pod (seconds) */
  readonly holdSeconds?: number;
}

/**
 * A container checkpoint archive the kubelet already wrote on a node (KEP-2008:
 * `POST /checkpoint/{namespace}/{pod}/{container}`; CRI-O puts the CRIU images in `checkpoint/`).
 * Nothing is stopped or dumped again: the agent on `node` imports the archive's lock state.
 */
export interface KubeletCheckpointSource {
  /** the node whose kubelet wrote the archive */
  readonly node: string;
  /**
   * the archive's file name in that kubelet's checkpoint directory (/var/lib/kubelet/checkpoints
   * by default, the agent's --kubelet-checkpoint-dir): a plain name, never a path
   */
  readonly file: string;
}

/** Where the lock state comes from when it is not a running pod (spec.sourcePodName). Exactly one member. */
export interface CheckpointSource {
  readonly kubeletCheckpoint?: KubeletCheckpointSource;
}

export interface LockCheckpointSpec {
  /** the running pod whose locks are recorded; exactly one of sourcePodName and source is set */
  readonly sourcePodName?: string;
  /** an existing container checkpoint archive instead of a running pod */
  readonly source?: CheckpointSource;
  /** optional pin: the checkpoint fails with SourcePodReplaced if the pod's UID differs */
  readonly sourcePodUID?: string;
  /** container names to dump; empty or absent means all containers */
  readonly containers?: readonly string[];
  /** lock kinds to record; absent means all */
  readonly lockKinds?: readonly ApiLockKind[];
  readonly storage?: Storage;
  readonly restore?: RestoreSpec;
  readonly target?: TargetSpec;
  /** delete the object this many seconds after it reached Dumped-and-restored or Failed */
  readonly ttlSecondsAfterFinished?: number;
}

/** metav1.Condition */
export interface Condition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly observedGeneration?: number;
  readonly lastTransitionTime: string;
  readonly reason: string;
  readonly message: string;
}

export interface LockCounts {
  readonly posix: number;
  readonly flock: number;
  readonly ofd: number;
  readonly lease: number;
  readonly total: number;
}

export interface RestoredPod {
  readonly name: string;
  /** set by the controller once the admitted pod exists (admission happens before the API server assigns it) */
  readonly uid?: string;
  readonly nodeName?: string;
  /** when the webhook admitted the restore pod */
  readonly time?: string;
}

export interface Durations {
  /** from dispatch to the agent's report */
  readonly dumpMilliseconds?: number;
  /** from creation to completion */
  readonly totalMilliseconds?: number;
}

export const AGENT_STATES = ['Dumping', 'Dumped', 'HandoverReady', 'Failed'] as const;
export type AgentState = (typeof AGENT_STATES)[number];

/** What the agent on status.nodeName reports (it writes only this sub-object). */
export interface AgentReport {
  /** node of the reporting agent (must equal status.nodeName) */
  readonly nodeName: string;
  /** UID of the pod the agent dumped (must equal status.sourcePodUID) */
  readonly podUID?: string;
  readonly state: AgentState;
  /** metadata.generation the agent acted on */
  readonly observedGeneration?: number;
  /** last time the agent touched this report; used by the controller's AgentUnavailable deadline */
  readonly heartbeatTime?: string;
  readonly startTime?: string;
  readonly completionTime?: string;
  readonly dumpMilliseconds?: number;
  /** where the images are (node path or pvc://claim/subPath) */
  readonly imageLocation?: string;
  readonly locks?: LockCounts;
  readonly files?: number;
  readonly skippedFds?: number;
  /** handover vault key is the checkpoint name; set when the vault holds the descriptions */
  readonly handoverSocket?: string;
  /** CamelCase failure reason when state is Failed (e.g. ProcessesNotFound, DumpFailed) */
  readonly reason?: string;
  readonly message?: string;
  /** set after the agent deleted the images of a deleting checkpoint (finalizer protocol) */
  readonly imagesDeleted?: boolean;
  /** where the images went (api storage may fall back to nodeLocal) */
  readonly storage?: StorageKind;
  /** the containers the images are for (one image directory each); the restore pod's shims are set up for these */
  readonly containers?: readonly string[];
  /** api storage: the ConfigMaps holding the images and where each key goes in the images volume */
  readonly configMaps?: readonly ImageConfigMap[];
  /**
   * each dumped container's image and the command line its top process ran (the image's
   * ENTRYPOINT and CMD as executed): the webhook wraps a replacement without an explicit command
   * with it when the replacement runs the same image
   */
  readonly commands?: readonly { readonly container: string; readonly image: string; readonly argv: readonly string[] }[];
  /**
   * set when the vault lost the descriptions it held for a handover (the agent restarted, or the
   * hold time ran out): their OFD/flock locks were released; restore pods re-take them
   */
  readonly handoverLostTime?: string;
  /** when the dumped processes that held locks exited (the start of any window), as the agent saw it */
  readonly sourceExit?: ClockReading;
}

/**
 * A point in time read on one node: wall clock (RFC 3339 with milliseconds) and, for precise
 * differences on the same kernel, CLOCK_MONOTONIC with the kernel's boot id.
 */
export interface ClockReading {
  readonly time: string;
  readonly bootID?: string;
  /** CLOCK_MONOTONIC in nanoseconds, as a decimal string */
  readonly monotonicNs?: string;
}

export const STORAGE_KINDS = ['api', 'nodeLocal', 'persistentVolumeClaim'] as const;
export type StorageKind = (typeof STORAGE_KINDS)[number];

export interface ImageConfigMap {
  readonly name: string;
  /** key → path in the images volume (`<container>/<file>`) */
  readonly items: readonly { readonly key: string; readonly path: string }[];
}

/** The source pod as the controller saw it at dispatch: what a replacement must match. */
export interface SourceInfo {
  readonly podName: string;
  readonly podUID: string;
  /** the pod's controller: StatefulSet, Deployment (through its ReplicaSet), ReplicaSet, … */
  readonly workload?: { readonly kind: string; readonly name: string; readonly uid?: string };
  /** the pod's labels without the per-revision ones: a replacement from the same workload carries them */
  readonly labels?: Readonly<Record<string, string>>;
}

export const RESTORE_STATES = ['Restoring', 'Held', 'Failed'] as const;
export type RestoreState = (typeof RESTORE_STATES)[number];

/**
 * The restore pod's report (status.restore), written by the agent on that pod's node from the
 * state file each wrapped container's shim writes just before it execs the application.
 */
export interface RestoreReport {
  readonly podName: string;
  readonly podUID?: string;
  readonly nodeName: string;
  /** Restoring: some container has not reported yet; Held: every container holds its locks; Failed: the last attempt failed (kubelet retries) */
  readonly state: RestoreState;
  /** when the last container reported its locks held */
  readonly heldTime?: string;
  /** locks the restore pod's shims took (re-taken or received by handover) */
  readonly locks?: LockCounts;
  /** locks received with their open file description (handover): never free */
  readonly handedOver?: number;
  /** recorded locks the shims could not restore (leases, …), reported per lock in their logs */
  readonly notRestored?: number;
  /**
   * longest time a restored lock was free: from the source's exit to the shim's grant of the last
   * lock that had to be re-taken (POSIX locks in a handover, every lock in a re-take); 0 when every
   * lock moved with its description; absent when the source's exit time is unknown
   */
  readonly windowMilliseconds?: number;
  /** CamelCase reason when state is Failed */
  readonly reason?: string;
  readonly message?: string;
}

export interface LockCheckpointStatus {
  readonly observedGeneration?: number;
  readonly conditions?: readonly Condition[];
  readonly phase?: Phase;
  readonly nodeName?: string;
  readonly sourcePodUID?: string;
  readonly imageLocation?: string;
  readonly locks?: LockCounts;
  readonly files?: number;
  readonly skippedFds?: number;
  readonly restoredPod?: RestoredPod;
  readonly restore?: RestoreReport;
  readonly source?: SourceInfo;
  /** when the controller first saw the checkpoint and started working on it */
  readonly startTime?: string;
  /** when the checkpoint was assigned to the agent */
  readonly dispatchTime?: string;
  /** when it reached Dumped/HandoverReady or Failed */
  readonly completionTime?: string;
  readonly durations?: Durations;
  readonly agent?: AgentReport;
  /** human-readable summary of the Ready condition */
  readonly message?: string;
}

export interface LockCheckpoint {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof KIND;
  readonly metadata: ObjectMeta;
  readonly spec: LockCheckpointSpec;
  readonly status?: LockCheckpointStatus;
}

/** Spec with every default applied (what the CRD's defaults would produce). */
export interface EffectiveSpec {
  /** set when the source is a running pod */
  readonly sourcePodName?: string;
  /** set when the source is a kubelet checkpoint archive */
  readonly kubeletCheckpoint?: KubeletCheckpointSource;
  readonly sourcePodUID?: string;
  readonly containers: readonly string[];
  readonly lockKinds: readonly ApiLockKind[];
  readonly storage:
    | { readonly kind: 'api'; readonly fallback: 'NodeLocal' | 'None'; readonly path: string }
    | { readonly kind: 'nodeLocal'; readonly path: string }
    | { readonly kind: 'persistentVolumeClaim'; readonly claimName: string; readonly subPath: string };
  readonly restore: { readonly mode: RestoreMode; readonly timeoutSeconds: number; readonly holdSeconds: number };
  readonly target: { readonly policy: TargetPolicy };
  readonly ttlSecondsAfterFinished?: number;
}

export const DEFAULTS = {
  restoreMode: 'Auto' as RestoreMode,
  timeoutSeconds: 30,
  holdSeconds: 300,
} as const;

export const LIMITS = {
  timeoutSeconds: { min: 1, max: 3600 },
  holdSeconds: { min: 0, max: 86400 },
  ttlSecondsAfterFinished: { min: 0, max: 31_536_000 },
  pathMaxLength: 512,
  /** NAME_MAX: a kubelet checkpoint archive's file name */
  fileNameMaxLength: 255,
  maxContainers: 64,
  /** api storage: at most this many bytes of images, in ConfigMaps of at most apiChunkBytes each */
  apiImageBytes: 8 * 1024 * 1024,
  apiChunkBytes: 900 * 1024,
} as const;

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

export interface FieldError {
  /** JSON-path-like field, e.g. `spec.storage.nodeLocal.path`, `spec.containers[2]` */
  readonly field: string;
  readonly message: string;
}

export class LockCheckpointError extends Error {
  readonly errors: readonly FieldError[];
  constructor(errors: readonly FieldError[], what = 'LockCheckpoint') {
    super(`invalid ${what}: ${errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`);
    this.name = 'LockCheckpointError';
    this.errors = errors;
  }
}

/** DNS-1123 label (container names, ...) */
export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** DNS-1123 subdomain (pod names, PVC names, object names) */
export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
export const UID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
/**
 * A relative path of plain segments: no leading '/', no '.' or '..' segments, no empty segments,
 * no NUL or backslash. Written without lookaheads so the very same pattern works in the CRD
 * (the API server evaluates `pattern` with Go's RE2) and in JavaScript.
 */
export const RELATIVE_PATH_SEGMENT = String.raw`(\.\.[^/\\\x00]+|\.[^./\\\x00][^/\\\x00]*|[^./\\\x00][^/\\\x00]*)`;
export const RELATIVE_PATH_PATTERN = `^${RELATIVE_PATH_SEGMENT}(/${RELATIVE_PATH_SEGMENT})*$`;

/** A kubelet checkpoint archive's file name: one plain path segment (the CRD's pattern is this very one). */
export const FILE_NAME_PATTERN = `^${RELATIVE_PATH_SEGMENT}$`;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/**
 * Checks a relative storage path. Returns an error message or undefined.
 * Rule: relative, plain segments only (no '', '.', '..'), no NUL, no backslash tricks, bounded length.
 */
export function checkRelativePath(p: string): string | undefined {
  if (p.length === 0) return 'must not be empty';
  if (p.length > LIMITS.pathMaxLength) return `must be at most ${LIMITS.pathMaxLength} characters`;
  if (p.includes('\0')) return 'must not contain NUL';
  if (p.startsWith('/')) return `must be relative to the storage root, not absolute ("${p}")`;
  if (p.includes('\\')) return 'must not contain a backslash';
  const segs = p.split('/');
  for (const s of segs) {
    if (s === '') return `must not contain empty segments or a trailing slash ("${p}")`;
    if (s === '..') return `must stay under the storage root: ".." is not allowed ("${p}")`;
    if (s === '.') return `must not contain "." segments ("${p}")`;
  }
  return undefined;
}

/**
 * Checks a file name in the kubelet's checkpoint directory. Returns an error message or undefined.
 * Rule: one plain name — no '/', no NUL, no backslash, not '.' or '..', at most NAME_MAX bytes —
 * so the agent can only ever open a file directly in that directory.
 */
export function checkCheckpointFileName(f: string): string | undefined {
  if (f.length === 0) return 'must not be empty';
  if (Buffer.byteLength(f, 'utf8') > LIMITS.fileNameMaxLength) return `must be at most ${LIMITS.fileNameMaxLength} bytes`;
  if (f.includes('\0')) return 'must not contain NUL';
  if (f.includes('/')) return `must be a file name in the kubelet's checkpoint directory, not a path ("${f}" contains "/")`;
  if (f.includes('\\')) return 'must not contain a backslash';
  if (f === '.' || f === '..') return `must be a file name, not "${f}"`;
  return undefined;
}

/** Spec fields that only make sense for a running source pod, and why (a kubelet checkpoint source refuses them). */
const POD_ONLY = 'a kubelet checkpoint source has no running pod';

const SPEC_KEYS = new Set(['sourcePodName', 'source', 'sourcePodUID', 'containers', 'lockKinds', 'storage', 'restore', 'target', 'ttlSecondsAfterFinished']);
const STORAGE_MEMBERS = ['api', 'nodeLocal', 'persistentVolumeClaim'] as const;

/** Validates a spec (raw JSON). Returns every problem found, with indexed field paths; [] when valid. */
export function validateSpec(spec: unknown, base = 'spec'): FieldError[] {
  const errs: FieldError[] = [];
  const err = (field: string, message: string) => errs.push({ field: `${base}${field}`, message });
  if (!isObj(spec)) {
    errs.push({ field: base, message: 'is required and must be an object' });
    return errs;
  }
  for (const k of Object.keys(spec)) if (!SPEC_KEYS.has(k)) err(`.${k}`, 'unknown field');

  const pod = spec.sourcePodName;
  const hasSource = spec.source !== undefined && spec.source !== null;
  if (pod === undefined || pod === null || pod === '') {
    if (!hasSource) err('.sourcePodName', 'is required (or spec.source: exactly one of sourcePodName or source must be set)');
  } else if (hasSource) err('', 'exactly one of sourcePodName or source must be set, not both');
  else if (typeof pod !== 'string') err('.sourcePodName', 'must be a string');
  else if (pod.length > 253 || !DNS1123_SUBDOMAIN.test(pod)) err('.sourcePodName', `must be a valid pod name (DNS-1123 subdomain), got "${pod}"`);

  if (hasSource) {
    const src = spec.source;
    if (!isObj(src)) err('.source', 'must be an object');
    else {
      for (const k of Object.keys(src)) if (k !== 'kubeletCheckpoint') err(`.source.${k}`, 'unknown field');
      const kc = src.kubeletCheckpoint;
      if (kc === undefined || kc === null) err('.source.kubeletCheckpoint', 'is required');
      else if (!isObj(kc)) err('.source.kubeletCheckpoint', 'must be an object');
      else {
        for (const k of Object.keys(kc)) if (k !== 'node' && k !== 'file') err(`.source.kubeletCheckpoint.${k}`, 'unknown field');
        if (typeof kc.node !== 'string' || kc.node === '') err('.source.kubeletCheckpoint.node', 'is required');
        else if (kc.node.length > 253 || !DNS1123_SUBDOMAIN.test(kc.node)) err('.source.kubeletCheckpoint.node', `must be a node name (DNS-1123 subdomain), got "${kc.node}"`);
        if (typeof kc.file !== 'string' || kc.file === '') err('.source.kubeletCheckpoint.file', 'is required');
        else {
          const m = checkCheckpointFileName(kc.file);
          if (m) err('.source.kubeletCheckpoint.file', m);
        }
      }
    }
    // what needs a running pod
    if (spec.sourcePodUID !== undefined) err('.sourcePodUID', `pins a source pod; ${POD_ONLY}`);
    if (Array.isArray(spec.containers) && spec.containers.length > 1) err('.containers', 'may name at most one container with a kubelet checkpoint source (an archive holds one container): the restore pod\'s container that gets its locks');
    if (isObj(spec.storage) && spec.storage.persistentVolumeClaim !== undefined && spec.storage.persistentVolumeClaim !== null) {
      err('.storage.persistentVolumeClaim', `is written through the source pod's own mount of the claim; ${POD_ONLY} (use storage.api or storage.nodeLocal)`);
    }
    if (isObj(spec.restore) && spec.restore.mode === 'Handover') err('.restore.mode', `Handover takes open file descriptions from running processes; ${POD_ONLY} (use Auto or Retake)`);
    if (isObj(spec.target) && (spec.target.policy === 'SameName' || spec.target.policy === 'Workload')) {
      err('.target.policy', `${String(spec.target.policy)} matches replacements of the source pod; ${POD_ONLY}: a restore pod names the checkpoint with the ${ANNOTATION_RESTORE_FROM} annotation (policy Annotated)`);
    }
  } else if (spec.sourcePodUID !== undefined) {
    if (typeof spec.sourcePodUID !== 'string' || !UID_PATTERN.test(spec.sourcePodUID)) err('.sourcePodUID', 'must be a UID (8-4-4-4-12 hex digits)');
  }

  if (spec.containers !== undefined) {
    if (!Array.isArray(spec.containers)) err('.containers', 'must be a list of container names');
    else {
      if (spec.containers.length > LIMITS.maxContainers) err('.containers', `must have at most ${LIMITS.maxContainers} entries`);
      const seen = new Set<string>();
      spec.containers.forEach((c, i) => {
        if (typeof c !== 'string' || c.length > 63 || !DNS1123_LABEL.test(c)) err(`.containers[${i}]`, 'must be a container name (DNS-1123 label)');
        else if (seen.has(c)) err(`.containers[${i}]`, `duplicate container "${c}"`);
        else seen.add(c);
      });
    }
  }

  if (spec.lockKinds !== undefined) {
    if (!Array.isArray(spec.lockKinds)) err('.lockKinds', 'must be a list of lock kinds');
    else {
      if (spec.lockKinds.length === 0) err('.lockKinds', `must not be empty (omit it for all kinds: ${LOCK_KINDS.join(', ')})`);
      const seen = new Set<string>();
      spec.lockKinds.forEach((k, i) => {
        if (typeof k !== 'string' || !(LOCK_KINDS as readonly string[]).includes(k)) err(`.lockKinds[${i}]`, `must be one of ${LOCK_KINDS.join(', ')}, got ${JSON.stringify(k)}`);
        else if (seen.has(k)) err(`.lockKinds[${i}]`, `duplicate lock kind "${k}"`);
        else seen.add(k);
      });
    }
  }

  if (spec.storage !== undefined) {
    const st = spec.storage;
    if (!isObj(st)) err('.storage', 'must be an object');
    else {
      for (const k of Object.keys(st)) if (!(STORAGE_MEMBERS as readonly string[]).includes(k)) err(`.storage.${k}`, 'unknown field');
      const members = STORAGE_MEMBERS.filter((k) => st[k] !== undefined && st[k] !== null);
      if (members.length !== 1) err('.storage', 'exactly one of api, nodeLocal or persistentVolumeClaim must be set');
      if (st.api !== undefined && st.api !== null) {
        const a = st.api;
        if (!isObj(a)) err('.storage.api', 'must be an object');
        else {
          for (const k of Object.keys(a)) if (k !== 'fallback') err(`.storage.api.${k}`, 'unknown field');
          if (a.fallback !== undefined && a.fallback !== 'NodeLocal' && a.fallback !== 'None') err('.storage.api.fallback', `must be NodeLocal or None, got ${JSON.stringify(a.fallback)}`);
        }
      }
      if (st.nodeLocal !== undefined && st.nodeLocal !== null) {
        const nl = st.nodeLocal;
        if (!isObj(nl)) err('.storage.nodeLocal', 'must be an object');
        else {
          for (const k of Object.keys(nl)) if (k !== 'path') err(`.storage.nodeLocal.${k}`, 'unknown field');
          if (nl.path !== undefined) {
            if (typeof nl.path !== 'string') err('.storage.nodeLocal.path', 'must be a string');
            else {
              const m = checkRelativePath(nl.path);
              if (m) err('.storage.nodeLocal.path', m);
            }
          }
        }
      }
      if (st.persistentVolumeClaim !== undefined && st.persistentVolumeClaim !== null) {
        const pvc = st.persistentVolumeClaim;
        if (!isObj(pvc)) err('.storage.persistentVolumeClaim', 'must be an object');
        else {
          for (const k of Object.keys(pvc)) if (k !== 'claimName' && k !== 'subPath') err(`.storage.persistentVolumeClaim.${k}`, 'unknown field');
          if (typeof pvc.claimName !== 'string' || pvc.claimName === '') err('.storage.persistentVolumeClaim.claimName', 'is required');
          else if (pvc.claimName.length > 253 || !DNS1123_SUBDOMAIN.test(pvc.claimName)) err('.storage.persistentVolumeClaim.claimName', `must be a valid PVC name, got "${pvc.claimName}"`);
          if (pvc.subPath !== undefined) {
            if (typeof pvc.subPath !== 'string') err('.storage.persistentVolumeClaim.subPath', 'must be a string');
            else {
              const m = checkRelativePath(pvc.subPath);
              if (m) err('.storage.persistentVolumeClaim.subPath', m.replace('storage root', 'volume'));
            }
          }
        }
      }
    }
  }

  if (spec.restore !== undefined) {
    const r = spec.restore;
    if (!isObj(r)) err('.restore', 'must be an object');
    else {
      for (const k of Object.keys(r)) if (!['mode', 'timeoutSeconds', 'holdSeconds'].includes(k)) err(`.restore.${k}`, 'unknown field');
      if (r.mode !== undefined && !(RESTORE_MODES as readonly unknown[]).includes(r.mode)) err('.restore.mode', `must be one of ${RESTORE_MODES.join(', ')}, got ${JSON.stringify(r.mode)}`);
      for (const f of ['timeoutSeconds', 'holdSeconds'] as const) {
        const v = r[f];
        if (v === undefined) continue;
        const lim = LIMITS[f];
        if (!isInt(v)) err(`.restore.${f}`, 'must be an integer');
        else if (v < lim.min || v > lim.max) err(`.restore.${f}`, `must be between ${lim.min} and ${lim.max}, got ${v}`);
      }
    }
  }

  if (spec.target !== undefined) {
    const t = spec.target;
    if (!isObj(t)) err('.target', 'must be an object');
    else {
      for (const k of Object.keys(t)) if (k !== 'policy') err(`.target.${k}`, 'unknown field');
      if (t.policy !== undefined && !(TARGET_POLICIES as readonly unknown[]).includes(t.policy)) err('.target.policy', `must be one of ${TARGET_POLICIES.join(', ')}, got ${JSON.stringify(t.policy)}`);
    }
  }

  if (spec.ttlSecondsAfterFinished !== undefined) {
    const v = spec.ttlSecondsAfterFinished;
    const lim = LIMITS.ttlSecondsAfterFinished;
    if (!isInt(v)) err('.ttlSecondsAfterFinished', 'must be an integer');
    else if (v < lim.min || v > lim.max) err('.ttlSecondsAfterFinished', `must be between ${lim.min} and ${lim.max}, got ${v}`);
  }
  return errs;
}

/** Applies defaults to a spec that passed validateSpec. */
export function effectiveSpec(spec: LockCheckpointSpec, name: string): EffectiveSpec {
  const st = spec.storage;
  const storage: EffectiveSpec['storage'] = st?.persistentVolumeClaim
    ? { kind: 'persistentVolumeClaim', claimName: st.persistentVolumeClaim.claimName, subPath: st.persistentVolumeClaim.subPath ?? name }
    : st?.nodeLocal
      ? { kind: 'nodeLocal', path: st.nodeLocal.path ?? name }
      // api (the default): a node-local copy is kept under the checkpoint's name for same-node restores and the fallback
      : { kind: 'api', fallback: st?.api?.fallback ?? 'NodeLocal', path: name };
  return {
    ...(spec.sourcePodName ? { sourcePodName: spec.sourcePodName } : {}),
    ...(spec.source?.kubeletCheckpoint ? { kubeletCheckpoint: spec.source.kubeletCheckpoint } : {}),
    ...(spec.sourcePodUID !== undefined ? { sourcePodUID: spec.sourcePodUID } : {}),
    containers: spec.containers ?? [],
    lockKinds: spec.lockKinds && spec.lockKinds.length > 0 ? spec.lockKinds : LOCK_KINDS,
    storage,
    restore: {
      mode: spec.restore?.mode ?? DEFAULTS.restoreMode,
      timeoutSeconds: spec.restore?.timeoutSeconds ?? DEFAULTS.timeoutSeconds,
      holdSeconds: spec.restore?.holdSeconds ?? DEFAULTS.holdSeconds,
    },
    target: { policy: spec.target?.policy ?? 'Annotated' },
    ...(spec.ttlSecondsAfterFinished !== undefined ? { ttlSecondsAfterFinished: spec.ttlSecondsAfterFinished } : {}),
  };
}

/**
 * Resolves where a node-local checkpoint lives: `<root>/<namespace>/<path>`. Re-checks every
 * component and that the joined result stays under `root` (defence in depth: the agent calls
 * this with whatever the API server handed it). Throws LockCheckpointError on refusal.
 */
export function nodeLocalDir(root: string, namespace: string, relPath: string): string {
  const errs: FieldError[] = [];
  if (!root.startsWith('/')) errs.push({ field: 'storageRoot', message: `must be absolute, got "${root}"` });
  if (!DNS1123_LABEL.test(namespace)) errs.push({ field: 'metadata.namespace', message: `must be a DNS-1123 label, got "${namespace}"` });
  const m = checkRelativePath(relPath);
  if (m) errs.push({ field: 'spec.storage.nodeLocal.path', message: m });
  if (errs.length) throw new LockCheckpointError(errs, 'storage location');
  const r = root.replace(/\/+$/, '') || '/';
  const dir = `${r === '/' ? '' : r}/${namespace}/${relPath}`;
  // segments were checked above, so the textual join cannot climb; assert it anyway
  if (!dir.startsWith(`${r === '/' ? '' : r}/`)) throw new LockCheckpointError([{ field: 'spec.storage', message: 'escapes the storage root' }], 'storage location');
  return dir;
}

/** Human-readable image location string for status (`/var/lib/...` or `pvc://claim/subPath`). */
export function imageLocationFor(spec: EffectiveSpec, namespace: string, storageRoot = DEFAULT_STORAGE_ROOT): string {
  return spec.storage.kind === 'persistentVolumeClaim'
    ? `pvc://${spec.storage.claimName}/${spec.storage.subPath}`
    : nodeLocalDir(storageRoot, namespace, spec.storage.path);
}

// ---------------------------------------------------------------------------------------
// Parsing raw JSON into readonly typed objects
// ---------------------------------------------------------------------------------------

function checkOptString(o: Record<string, unknown>, k: string, field: string, errs: FieldError[]): void {
  if (o[k] !== undefined && o[k] !== null && typeof o[k] !== 'string') errs.push({ field: `${field}.${k}`, message: 'must be a string' });
}
function checkOptInt(o: Record<string, unknown>, k: string, field: string, errs: FieldError[], min = 0): void {
  const v = o[k];
  if (v === undefined || v === null) return;
  if (!isInt(v) || v < min) errs.push({ field: `${field}.${k}`, message: `must be an integer >= ${min}` });
}
function checkOptTime(o: Record<string, unknown>, k: string, field: string, errs: FieldError[]): void {
  const v = o[k];
  if (v === undefined || v === null) return;
  if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) errs.push({ field: `${field}.${k}`, message: 'must be an RFC 3339 date-time' });
}
function checkClock(v: unknown, field: string, errs: FieldError[]): void {
  if (v === undefined || v === null) return;
  if (!isObj(v)) {
    errs.push({ field, message: 'must be an object' });
    return;
  }
  if (typeof v.time !== 'string' || Number.isNaN(Date.parse(v.time))) errs.push({ field: `${field}.time`, message: 'must be an RFC 3339 date-time' });
  checkOptString(v, 'bootID', field, errs);
  if (v.monotonicNs !== undefined && v.monotonicNs !== null && (typeof v.monotonicNs !== 'string' || !/^\d{1,20}$/.test(v.monotonicNs))) {
    errs.push({ field: `${field}.monotonicNs`, message: 'must be a decimal string of nanoseconds' });
  }
}
function checkCounts(v: unknown, field: string, errs: FieldError[]): void {
  if (v === undefined || v === null) return;
  if (!isObj(v)) {
    errs.push({ field, message: 'must be an object' });
    return;
  }
  for (const k of ['posix', 'flock', 'ofd', 'lease', 'total']) checkOptInt(v, k, field, errs);
}

/** Validates the status sub-object's types (it is written by lockmig components only). */
export function validateStatus(status: unknown, base = 'status'): FieldError[] {
  const errs: FieldError[] = [];
  if (status === undefined || status === null) return errs;
  if (!isObj(status)) return [{ field: base, message: 'must be an object' }];
  checkOptInt(status, 'observedGeneration', base, errs);
  if (status.phase !== undefined && !(PHASES as readonly unknown[]).includes(status.phase)) {
    errs.push({ field: `${base}.phase`, message: `must be one of ${PHASES.join(', ')}, got ${JSON.stringify(status.phase)}` });
  }
  for (const k of ['nodeName', 'sourcePodUID', 'imageLocation', 'message']) checkOptString(status, k, base, errs);
  for (const k of ['files', 'skippedFds']) checkOptInt(status, k, base, errs);
  for (const k of ['startTime', 'dispatchTime', 'completionTime']) checkOptTime(status, k, base, errs);
  checkCounts(status.locks, `${base}.locks`, errs);
  if (status.conditions !== undefined) {
    if (!Array.isArray(status.conditions)) errs.push({ field: `${base}.conditions`, message: 'must be a list' });
    else {
      status.conditions.forEach((c, i) => {
        const f = `${base}.conditions[${i}]`;
        if (!isObj(c)) {
          errs.push({ field: f, message: 'must be an object' });
          return;
        }
        if (typeof c.type !== 'string' || c.type === '') errs.push({ field: `${f}.type`, message: 'is required' });
        if (!['True', 'False', 'Unknown'].includes(c.status as string)) errs.push({ field: `${f}.status`, message: 'must be True, False or Unknown' });
        if (typeof c.reason !== 'string') errs.push({ field: `${f}.reason`, message: 'is required' });
        if (c.message !== undefined && typeof c.message !== 'string') errs.push({ field: `${f}.message`, message: 'must be a string' });
        checkOptTime(c, 'lastTransitionTime', f, errs);
        checkOptInt(c, 'observedGeneration', f, errs);
      });
    }
  }
  if (status.restoredPod !== undefined && status.restoredPod !== null) {
    const rp = status.restoredPod;
    if (!isObj(rp) || typeof rp.name !== 'string') errs.push({ field: `${base}.restoredPod`, message: 'must be an object with a name' });
  }
  if (status.durations !== undefined && status.durations !== null) {
    if (!isObj(status.durations)) errs.push({ field: `${base}.durations`, message: 'must be an object' });
    else for (const k of ['dumpMilliseconds', 'totalMilliseconds']) checkOptInt(status.durations, k, `${base}.durations`, errs);
  }
  if (status.agent !== undefined && status.agent !== null) {
    const a = status.agent;
    const f = `${base}.agent`;
    if (!isObj(a)) errs.push({ field: f, message: 'must be an object' });
    else {
      if (typeof a.nodeName !== 'string' || a.nodeName === '') errs.push({ field: `${f}.nodeName`, message: 'is required' });
      if (!(AGENT_STATES as readonly unknown[]).includes(a.state)) errs.push({ field: `${f}.state`, message: `must be one of ${AGENT_STATES.join(', ')}, got ${JSON.stringify(a.state)}` });
      for (const k of ['podUID', 'imageLocation', 'handoverSocket', 'reason', 'message']) checkOptString(a, k, f, errs);
      for (const k of ['heartbeatTime', 'startTime', 'completionTime']) checkOptTime(a, k, f, errs);
      for (const k of ['observedGeneration', 'dumpMilliseconds', 'files', 'skippedFds']) checkOptInt(a, k, f, errs);
      checkCounts(a.locks, `${f}.locks`, errs);
      if (a.imagesDeleted !== undefined && typeof a.imagesDeleted !== 'boolean') errs.push({ field: `${f}.imagesDeleted`, message: 'must be a boolean' });
      checkClock(a.sourceExit, `${f}.sourceExit`, errs);
      if (a.containers !== undefined && a.containers !== null && (!Array.isArray(a.containers) || a.containers.some((c) => typeof c !== 'string' || !DNS1123_LABEL.test(c)))) {
        errs.push({ field: `${f}.containers`, message: 'must be a list of container names' });
      }
      checkOptTime(a, 'handoverLostTime', f, errs);
    }
  }
  if (status.restore !== undefined && status.restore !== null) {
    const r = status.restore;
    const f = `${base}.restore`;
    if (!isObj(r)) errs.push({ field: f, message: 'must be an object' });
    else {
      for (const k of ['podName', 'nodeName']) if (typeof r[k] !== 'string' || r[k] === '') errs.push({ field: `${f}.${k}`, message: 'is required' });
      if (!(RESTORE_STATES as readonly unknown[]).includes(r.state)) errs.push({ field: `${f}.state`, message: `must be one of ${RESTORE_STATES.join(', ')}, got ${JSON.stringify(r.state)}` });
      for (const k of ['podUID', 'reason', 'message']) checkOptString(r, k, f, errs);
      checkOptTime(r, 'heldTime', f, errs);
      for (const k of ['handedOver', 'notRestored', 'windowMilliseconds']) checkOptInt(r, k, f, errs);
      checkCounts(r.locks, `${f}.locks`, errs);
    }
  }
  return errs;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as Record<string, unknown>)) deepFreeze(x);
  }
  return v;
}

/**
 * Turns raw JSON (from the API server, a file, an admission request) into a readonly, deeply
 * frozen LockCheckpoint. Throws LockCheckpointError listing every problem with indexed fields.
 * The input is copied (structuredClone), never mutated.
 */
export function parseLockCheckpoint(raw: unknown): LockCheckpoint {
  const errs: FieldError[] = [];
  if (!isObj(raw)) throw new LockCheckpointError([{ field: '(root)', message: 'must be a JSON object' }]);
  if (raw.apiVersion !== undefined && raw.apiVersion !== API_VERSION) errs.push({ field: 'apiVersion', message: `must be ${API_VERSION}, got ${JSON.stringify(raw.apiVersion)}` });
  if (raw.kind !== undefined && raw.kind !== KIND) errs.push({ field: 'kind', message: `must be ${KIND}, got ${JSON.stringify(raw.kind)}` });
  const md = raw.metadata;
  if (!isObj(md)) errs.push({ field: 'metadata', message: 'is required and must be an object' });
  else {
    if (typeof md.name !== 'string' || md.name === '') errs.push({ field: 'metadata.name', message: 'is required' });
    else if (md.name.length > 253 || !DNS1123_SUBDOMAIN.test(md.name)) errs.push({ field: 'metadata.name', message: `must be a DNS-1123 subdomain, got "${md.name}"` });
    if (typeof md.namespace !== 'string' || md.namespace === '') errs.push({ field: 'metadata.namespace', message: 'is required (LockCheckpoint is namespaced)' });
    checkOptInt(md, 'generation', 'metadata', errs);
    for (const k of ['uid', 'resourceVersion']) checkOptString(md, k, 'metadata', errs);
    for (const k of ['creationTimestamp', 'deletionTimestamp']) checkOptTime(md, k, 'metadata', errs);
    for (const k of ['labels', 'annotations']) {
      const m = md[k];
      if (m !== undefined && m !== null && (!isObj(m) || Object.values(m).some((v) => typeof v !== 'string'))) errs.push({ field: `metadata.${k}`, message: 'must map strings to strings' });
    }
    if (md.finalizers !== undefined && md.finalizers !== null && (!Array.isArray(md.finalizers) || md.finalizers.some((f) => typeof f !== 'string'))) {
      errs.push({ field: 'metadata.finalizers', message: 'must be a list of strings' });
    }
  }
  errs.push(...validateSpec(raw.spec));
  errs.push(...validateStatus(raw.status));
  if (errs.length) throw new LockCheckpointError(errs);
  const copy = structuredClone(raw) as Record<string, unknown>;
  copy.apiVersion = API_VERSION;
  copy.kind = KIND;
  return deepFreeze(copy as unknown as LockCheckpoint);
}

/** Finds a condition by type. */
export function getCondition(status: LockCheckpointStatus | undefined, type: string): Condition | undefined {
  return status?.conditions?.find((c) => c.type === type);
}

/** Phases after which the controller does no more dump work (TTL counts from completionTime). */
export function isFinished(phase: Phase | undefined): boolean {
  return phase === 'Dumped' || phase === 'HandoverReady' || phase === 'Restoring' || phase === 'Restored' || phase === 'Failed';
}
