/**
 * The restore webhook's decision, as a pure function:
 *
 *     decideRestore(pod, checkpoint | undefined, config) → { allowed, message?, patch?, restoredPod? }
 *
 * No I/O, no clock, no randomness of its own (the caller passes `now` and `randomSuffix`), so
 * every rule below is unit-tested by applying the returned RFC 6902 patch to real pod specs.
 *
 * What a restore pod (annotation `lockmig.dev/restore-from: <checkpoint>`) gets:
 *  - volumes: the checkpoint images (read-only; node-local hostPath `<storageRoot>/<ns>/<path>`
 *    or the PVC subPath), the shim runtime (hostPath `--shim-dir`, read-only), for handover
 *    restores the vault socket directory (hostPath `--vault-socket-dir`), and a small pod-scoped
 *    emptyDir for the shims' state files;
 *  - each target container's command becomes
 *    `<shim bundle: ld.so … node main.js> restore --image <images>/<container> --timeout S [--allow M…]
 *       [--handover <sock> --checkpoint <ns>/<name>.<container>] --state-file <state>/<container>.json
 *       -- <original command> <original args>`; `--allow` names the container's data mounts
 *    (never its Secret, ConfigMap, projected — the service-account token — or downward API mounts);
 *  - the readiness gate `lockmig.dev/locks-held`: the agent on the pod's node sets that pod
 *    condition once every shim reported its locks held, so the pod is not Ready before;
 *  - env `LOCKMIG_RESTORE_FROM=<ns>/<name>` on each wrapped container (the idempotency marker);
 *  - node pinning for node-local images and handover (see `pinToNode`).
 *
 * Images are per container: the agent writes `<checkpoint dir>/<container name>/` for every
 * dumped container, so each wrapped container restores exactly the locks its namesake held.
 *
 * Failure policy (where it is registered: charts/, see docs): **Fail** (closed). A pod that asked
 * for its locks and starts without them is exactly the silent data race lockmig exists to
 * prevent, so an unreachable webhook must block such pods rather than let them through. Pods
 * without the annotation are always allowed unchanged, and the registration should exclude the
 * lockmig namespace and kube-system (namespaceSelector) so a down webhook cannot block itself.
 */
import type { V1Container, V1Pod, V1Volume, V1NodeSelectorTerm } from '@kubernetes/client-node';
import {
  ANNOTATION_RESTORE_FROM, DEFAULT_STORAGE_ROOT, DNS1123_SUBDOMAIN, POD_CONDITION_LOCKS_HELD, commandAnnotation, effectiveSpec, nodeLocalDir,
  type LockCheckpoint, type RestoredPod,
} from '../api/index.js';
import { SHIM_CURRENT, shimCommand } from '../bundle/command.js';
import { vaultKey } from '../agent/layout.js';

/** One RFC 6902 operation (only the ones this webhook emits). */
export type JsonPatchOp =
  | { readonly op: 'add'; readonly path: string; readonly value: unknown }
  | { readonly op: 'replace'; readonly path: string; readonly value: unknown }
  | { readonly op: 'remove'; readonly path: string }
  | { readonly op: 'test'; readonly path: string; readonly value: unknown };

export interface WebhookConfig {
  /**
   * host directory the agent installs the shim runtime into (`lockmig agent --shim-dir`); the
   * self-contained bundle (src/bundle) is reached through its `current` link
   */
  readonly shimDir: string;
  /** host directory holding the agent's vault socket */
  readonly vaultSocketDir: string;
  /** vault socket file name inside vaultSocketDir when the agent did not report one */
  readonly vaultSocketName: string;
  /** agent's node-local storage root (`lockmig agent --storage-root`) */
  readonly storageRoot: string;
  /** where the volumes appear inside the restore containers */
  readonly mountRoot: string;
}

export const DEFAULT_WEBHOOK_CONFIG: WebhookConfig = {
  shimDir: '/var/lib/lockmig/shim',
  vaultSocketDir: '/run/lockmig',
  vaultSocketName: 'vault.sock',
  storageRoot: DEFAULT_STORAGE_ROOT,
  mountRoot: '/lockmig',
};


/** Env var set on each wrapped container; its presence means "already wrapped". */
export const ENV_RESTORE_FROM = 'LOCKMIG_RESTORE_FROM';
/** Env var (downward API spec.nodeName) the shim's --handover path names through $(…) expansion. */
export const ENV_NODE_NAME = 'LOCKMIG_NODE_NAME';
export const VOLUME_IMAGES = 'lockmig-images';
export const VOLUME_SHIM = 'lockmig-shim';
export const VOLUME_VAULT = 'lockmig-vault';
export const VOLUME_STATE = 'lockmig-state';

/** Volume kinds that hold configuration or credentials, not data a program locks: never in --allow. */
const NOT_DATA = ['secret', 'configMap', 'projected', 'downwardAPI'] as const;

/** The container's mount paths under which the shim may reopen files: its data volumes only. */
export function dataMountPaths(pod: V1Pod, c: V1Container, ours: ReadonlySet<string>): string[] {
  const volumes = new Map((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
  const isData = (name: string): boolean => {
    const v = volumes.get(name) as Record<string, unknown> | undefined;
    return v !== undefined && !NOT_DATA.some((k) => v[k] !== undefined && v[k] !== null);
  };
  return [...new Set((c.volumeMounts ?? []).filter((vm) => !ours.has(vm.mountPath) && isData(vm.name)).map((vm) => vm.mountPath))];
}

export interface DecideOptions {
  /** RFC 3339 time stamped into restoredPod.time */
  readonly now: string;
  /** 5 characters for a pod that only has generateName (the API server would pick them later) */
  readonly randomSuffix?: string;
  /** namespace of the admission request (a pod object on CREATE may omit it) */
  readonly namespace?: string;
  /**
   * The checkpoint was found for the pod by its spec.target policy (the pod names none). Such a
   * pod never asked for anything: whatever stops the restore admits it unchanged (with a note
   * for a Warning event) instead of denying it — a StatefulSet or Deployment must never be
   * kept from recreating its pod by lockmig.
   */
  readonly matched?: boolean;
}

export interface Decision {
  readonly allowed: boolean;
  /** the reason for a denial (shown to the user by kubectl), or a note on an allowed pod */
  readonly message?: string;
  readonly patch?: readonly JsonPatchOp[];
  /** what to record in the checkpoint's status.restoredPod once allowed (undefined: nothing to record) */
  readonly restoredPod?: RestoredPod;
  /** the checkpoint this pod restores from, `<ns>/<name>` */
  readonly checkpoint?: string;
  /** a matched pod admitted unchanged: why it was not restored (for a Warning event) */
  readonly notRestored?: string;
}

export type RestoreTarget =
  | { readonly kind: 'none' }
  | { readonly kind: 'checkpoint'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'invalid'; readonly message: string };

/**
 * Which checkpoint a pod asks for: the annotation value is `<name>` or `<namespace>/<name>`
 * (the namespace, if given, must be the pod's own: checkpoints are never shared across namespaces).
 */
export function restoreTarget(pod: V1Pod, namespace: string): RestoreTarget {
  const raw = pod.metadata?.annotations?.[ANNOTATION_RESTORE_FROM];
  if (raw === undefined) return { kind: 'none' };
  const v = raw.trim();
  const parts = v.split('/');
  if (parts.length > 2 || v === '') {
    return { kind: 'invalid', message: `annotation ${ANNOTATION_RESTORE_FROM} must be "<checkpoint>" or "<namespace>/<checkpoint>", got ${JSON.stringify(raw)}` };
  }
  const [ns, name] = parts.length === 2 ? [parts[0]!, parts[1]!] : [namespace, parts[0]!];
  if (ns !== namespace) {
    return { kind: 'invalid', message: `LockCheckpoint "${name}" is in namespace "${ns}", but the pod is in "${namespace}": a pod can only restore from a checkpoint in its own namespace` };
  }
  if (!DNS1123_SUBDOMAIN.test(name) || name.length > 253) {
    return { kind: 'invalid', message: `annotation ${ANNOTATION_RESTORE_FROM}: ${JSON.stringify(name)} is not a valid LockCheckpoint name` };
  }
  return { kind: 'checkpoint', namespace: ns, name };
}

const denyDecision = (message: string, checkpoint?: string): Decision => ({ allowed: false, message, ...(checkpoint ? { checkpoint } : {}) });

/** JSON pointer escaping (RFC 6901). */
function ptr(...segs: Array<string | number>): string {
  return segs.map((s) => `/${String(s).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

function isWrapped(c: V1Container): boolean {
  return (c.env ?? []).some((e) => e.name === ENV_RESTORE_FROM);
}

/**
 * The command the shim should exec: the explicit command, else the per-container annotation,
 * else — same image as the source container — the command line the agent read from the source
 * container's process (status.agent.commands: the image's ENTRYPOINT and CMD as they ran).
 */
function originalCommand(pod: V1Pod, c: V1Container, recorded?: readonly { container: string; image: string; argv: readonly string[] }[]): { argv: string[] } | { error: string } {
  if (c.command && c.command.length > 0) return { argv: [...c.command, ...(c.args ?? [])] };
  const key = commandAnnotation(c.name);
  const ann = pod.metadata?.annotations?.[key];
  const how = `set spec.containers[].command for "${c.name}", or the annotation ${key} to its command as a JSON array of strings (e.g. ["/usr/local/bin/app","--serve"])`;
  const seen = recorded?.find((r) => r.container === c.name);
  if (ann === undefined && seen && seen.image === c.image && seen.argv.length > 0 && !c.args) return { argv: [...seen.argv] };
  if (ann === undefined) {
    return {
      error: `container "${c.name}" has no explicit command: lockmig cannot see the image's ENTRYPOINT/CMD, so it cannot wrap the container with the restore shim safely; ${how}`,
    };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(ann);
  } catch (err) {
    return { error: `annotation ${key} is not valid JSON (${(err as Error).message}); ${how}` };
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || parsed.some((x) => typeof x !== 'string' || x === '')) {
    return { error: `annotation ${key} must be a non-empty JSON array of non-empty strings, got ${ann}; ${how}` };
  }
  return { argv: [...(parsed as string[]), ...(c.args ?? [])] };
}

/**
 * Node pinning. Decision: a required node affinity on `metadata.name` (matchFields), the way the
 * DaemonSet controller pins its pods — not `spec.nodeName`. The pod still goes through the
 * scheduler (resources, taints, preemption are honoured, and an unschedulable pod stays Pending
 * with a visible reason instead of failing on the kubelet), and the field matches the node's
 * name exactly (the `kubernetes.io/hostname` label may differ from it). The term is ANDed into
 * every existing nodeSelectorTerm (terms are ORed), so the user's own constraints still hold.
 */
function pinToNode(pod: V1Pod, node: string): JsonPatchOp[] | { error: string } {
  if (pod.spec?.nodeName && pod.spec.nodeName !== node) {
    return { error: `pod sets spec.nodeName "${pod.spec.nodeName}", but the checkpoint's images and locks are on node "${node}"` };
  }
  const req = { key: 'metadata.name', operator: 'In', values: [node] };
  const pinned = (t: V1NodeSelectorTerm) => (t.matchFields ?? []).some((f) => f.key === 'metadata.name' && f.operator === 'In' && f.values?.length === 1 && f.values[0] === node);
  const affinity = pod.spec?.affinity;
  const na = affinity?.nodeAffinity;
  const terms = na?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  if (!affinity) return [{ op: 'add', path: '/spec/affinity', value: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [req] }] } } } }];
  if (!na) return [{ op: 'add', path: '/spec/affinity/nodeAffinity', value: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [req] }] } } }];
  if (!terms || terms.length === 0) {
    return [{ op: na.requiredDuringSchedulingIgnoredDuringExecution ? 'replace' : 'add', path: '/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution', value: { nodeSelectorTerms: [{ matchFields: [req] }] } }];
  }
  const ops: JsonPatchOp[] = [];
  terms.forEach((t, i) => {
    if (pinned(t)) return;
    const base = ['spec', 'affinity', 'nodeAffinity', 'requiredDuringSchedulingIgnoredDuringExecution', 'nodeSelectorTerms', i];
    ops.push(t.matchFields ? { op: 'add', path: ptr(...base, 'matchFields', '-'), value: req } : { op: 'add', path: ptr(...base, 'matchFields'), value: [req] });
  });
  return ops;
}

/**
 * Decide whether (and how) to admit a pod. `checkpoint` is the LockCheckpoint named by the pod's
 * annotation in the pod's namespace, or undefined if it does not exist. The caller resolves the
 * name with `restoreTarget` first.
 */
export function decideRestore(pod: V1Pod, checkpoint: LockCheckpoint | undefined, config: WebhookConfig, opts: DecideOptions): Decision {
  const namespace = pod.metadata?.namespace || opts.namespace || 'default';
  const target: RestoreTarget = opts.matched && checkpoint
    ? { kind: 'checkpoint', namespace, name: checkpoint.metadata.name }
    : restoreTarget(pod, namespace);
  if (target.kind === 'none') return { allowed: true };
  const deny = opts.matched
    ? (message: string, checkpointRef?: string): Decision => ({ allowed: true, notRestored: message, message: `admitted without restoring: ${message}`, ...(checkpointRef ? { checkpoint: checkpointRef } : {}) })
    : denyDecision;
  if (target.kind === 'invalid') return deny(target.message);
  const ref = `${target.namespace}/${target.name}`;
  if (!checkpoint) return deny(`LockCheckpoint "${target.name}" not found in namespace "${namespace}" (annotation ${ANNOTATION_RESTORE_FROM})`, ref);
  if (checkpoint.metadata.namespace !== namespace) return deny(`LockCheckpoint ${checkpoint.metadata.namespace}/${checkpoint.metadata.name} is not in the pod's namespace "${namespace}"`, ref);
  if (checkpoint.metadata.deletionTimestamp) return deny(`LockCheckpoint ${ref} is being deleted; its images are going away`, ref);

  // Pod identity. A pod with only generateName gets its final name here, so the checkpoint can
  // record which pod restored it (the API server would otherwise name it after admission).
  const patch: JsonPatchOp[] = [];
  let podName = pod.metadata?.name ?? '';
  if (podName === '') {
    const gen = pod.metadata?.generateName;
    if (!gen || !opts.randomSuffix) return deny('the restore pod needs metadata.name (or generateName) so the checkpoint can record which pod restored it', ref);
    podName = `${gen}${opts.randomSuffix}`;
    patch.push({ op: 'add', path: '/metadata/name', value: podName });
  }

  const st = checkpoint.status;
  const restored = st?.restoredPod;
  // the same admission again (re-invocation): same name and the claimed pod not created yet; a
  // pod whose UID is known is another pod, even under the same name (a StatefulSet's next db-0)
  const again = restored !== undefined && restored.name === podName && restored.uid === undefined;
  if (restored && !again) {
    return deny(`LockCheckpoint ${ref} was already restored by pod "${restored.name}"${restored.time ? ` at ${restored.time}` : ''}: a checkpoint restores into one pod only (until that pod is gone without having held the locks); take a new LockCheckpoint`, ref);
  }
  const phase = st?.phase;
  if (!(phase === 'Dumped' || phase === 'HandoverReady' || ((phase === 'Restoring' || phase === 'Restored') && again))) {
    const why = phase === 'Failed' ? `it failed${st?.message ? `: ${st.message}` : ''}` : `its phase is ${phase ?? 'not set yet'} (wait until it is Dumped or HandoverReady: kubectl get lckpt ${checkpoint.metadata.name} -n ${namespace})`;
    return deny(`LockCheckpoint ${ref} is not ready to restore from: ${why}`, ref);
  }
  const node = st?.nodeName;
  let spec;
  try {
    spec = effectiveSpec(checkpoint.spec, checkpoint.metadata.name);
  } catch (err) {
    return deny(`LockCheckpoint ${ref} has an invalid spec: ${(err as Error).message}`, ref);
  }

  const containers = pod.spec?.containers ?? [];
  // a kubelet checkpoint holds one container: the agent reports which one the images are for
  const imported = spec.kubeletCheckpoint ? st?.agent?.containers ?? [] : [];
  const wanted = spec.containers.length > 0 ? spec.containers : imported.length > 0 ? imported : containers.map((c) => c.name);
  const missingNames = wanted.filter((n) => !containers.some((c) => c.name === n));
  if (missingNames.length > 0) {
    return deny(`LockCheckpoint ${ref} holds locks of container(s) ${missingNames.map((n) => `"${n}"`).join(', ')}, which the pod does not have (it has ${containers.map((c) => `"${c.name}"`).join(', ') || 'none'})`, ref);
  }
  // The agent's own report wins over the phase (the controller copies it a moment later): an
  // agent whose vault lost the descriptions reports Dumped, and the pod must then re-take.
  const agent = st?.agent;
  const handover = spec.restore.mode !== 'Retake'
    && (agent ? agent.state === 'HandoverReady' : phase === 'HandoverReady');
  // What the agent really did (api storage falls back to nodeLocal when the images are too big).
  const storage = agent?.storage ?? (spec.storage.kind === 'persistentVolumeClaim' ? 'persistentVolumeClaim' : 'nodeLocal');
  const nodeLocal = storage === 'nodeLocal';
  // Pinned to the images' node for node-local images, and when the checkpoint insists on a
  // handover; otherwise the pod goes wherever the scheduler puts it and hands over only if that
  // is the source's node (elsewhere its shim re-takes every lock from the images).
  const pin = nodeLocal || spec.restore.mode === 'Handover';
  if ((pin || handover) && !node) return deny(`LockCheckpoint ${ref} has no status.nodeName: cannot tell which node holds its images`, ref);

  // Volumes (added once; a re-admitted pod already has them).
  const m = config.mountRoot.replace(/\/+$/, '');
  const imagesMount = `${m}/images`;
  const shimMount = `${m}/shim`;
  const vaultMount = `${m}/vault`;
  const stateMount = `${m}/state`;
  const volumes: V1Volume[] = [];
  if (storage === 'api') {
    const cms = agent?.configMaps ?? [];
    if (cms.length === 0) return deny(`LockCheckpoint ${ref} keeps its images in the API, but its agent report names no ConfigMap`, ref);
    volumes.push({ name: VOLUME_IMAGES, projected: { sources: cms.map((c) => ({ configMap: { name: c.name, items: c.items.map((i) => ({ key: i.key, path: i.path })) } })) } });
  } else if (nodeLocal) {
    const root = config.storageRoot.replace(/\/+$/, '');
    const reported = agent?.imageLocation;
    let hostDir: string;
    try {
      // the agent reports where it wrote them (its storage root may be per node); anything
      // outside the configured root is ignored
      hostDir = reported && reported.startsWith(`${root}/`) && !reported.split('/').some((x) => x === '..' || x === '.')
        ? reported
        : nodeLocalDir(config.storageRoot, namespace, spec.storage.kind === 'persistentVolumeClaim' ? checkpoint.metadata.name : spec.storage.path);
    } catch (err) {
      return deny(`LockCheckpoint ${ref}: ${(err as Error).message}`, ref);
    }
    volumes.push({ name: VOLUME_IMAGES, hostPath: { path: hostDir, type: 'Directory' } });
  } else if (spec.storage.kind === 'persistentVolumeClaim') {
    volumes.push({ name: VOLUME_IMAGES, persistentVolumeClaim: { claimName: spec.storage.claimName, readOnly: true } });
  }
  volumes.push({ name: VOLUME_SHIM, hostPath: { path: config.shimDir, type: 'Directory' } });
  if (handover) volumes.push({ name: VOLUME_VAULT, hostPath: { path: config.vaultSocketDir, type: 'Directory' } });
  volumes.push({ name: VOLUME_STATE, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } });
  const existing = new Set((pod.spec?.volumes ?? []).map((v) => v.name));
  const newVolumes = volumes.filter((v) => !existing.has(v.name));
  if (newVolumes.length > 0) {
    if (!pod.spec?.volumes) patch.push({ op: 'add', path: '/spec/volumes', value: newVolumes });
    else for (const v of newVolumes) patch.push({ op: 'add', path: '/spec/volumes/-', value: v });
  }

  // The vault socket: the agent reports its host path; inside the pod it is the same file name
  // under the mounted directory.
  const reported = st?.agent?.handoverSocket;
  const sockName = reported && reported.startsWith(`${config.vaultSocketDir.replace(/\/+$/, '')}/`)
    ? reported.slice(config.vaultSocketDir.replace(/\/+$/, '').length + 1)
    : config.vaultSocketName;
  // a per-node socket (<dir>/<node>/vault.sock, as the chart runs the agents): the shim asks the
  // vault of whatever node the pod lands on, which has the descriptions only if it is the source's
  const nodeSock = node && sockName.startsWith(`${node}/`) ? `$(${ENV_NODE_NAME})/${sockName.slice(node.length + 1)}` : sockName;

  let wrappedCount = 0;
  for (let i = 0; i < containers.length; i++) {
    const c = containers[i]!;
    if (!wanted.includes(c.name)) continue;
    if (isWrapped(c)) continue; // re-admission: never wrap twice
    const orig = originalCommand(pod, c, agent?.commands);
    if ('error' in orig) return deny(orig.error, ref);
    const allow = dataMountPaths(pod, c, new Set([imagesMount, shimMount, vaultMount, stateMount]));
    const shimArgv = [
      ...shimCommand(`${shimMount}/${SHIM_CURRENT}`),
      '--image', `${imagesMount}/${c.name}`,
      '--timeout', String(spec.restore.timeoutSeconds),
      ...allow.flatMap((a) => ['--allow', a]),
      ...(handover ? ['--handover', `${vaultMount}/${nodeSock}`, '--checkpoint', vaultKey(namespace, target.name, c.name)] : []),
      '--state-file', `${stateMount}/${c.name}.json`,
      '--', ...orig.argv,
    ];
    const base = ['spec', 'containers', i];
    patch.push({ op: c.command ? 'replace' : 'add', path: ptr(...base, 'command'), value: shimArgv });
    if (c.args) patch.push({ op: 'remove', path: ptr(...base, 'args') });
    const mounts = [
      { name: VOLUME_IMAGES, mountPath: imagesMount, readOnly: true, ...(spec.storage.kind === 'persistentVolumeClaim' ? { subPath: spec.storage.subPath } : {}) },
      { name: VOLUME_SHIM, mountPath: shimMount, readOnly: true },
      ...(handover ? [{ name: VOLUME_VAULT, mountPath: vaultMount }] : []),
      { name: VOLUME_STATE, mountPath: stateMount },
    ].filter((vm) => !(c.volumeMounts ?? []).some((x) => x.name === vm.name || x.mountPath === vm.mountPath));
    if (mounts.length > 0) {
      if (!c.volumeMounts) patch.push({ op: 'add', path: ptr(...base, 'volumeMounts'), value: mounts });
      else for (const vm of mounts) patch.push({ op: 'add', path: ptr(...base, 'volumeMounts', '-'), value: vm });
    }
    const envs: object[] = [{ name: ENV_RESTORE_FROM, value: ref }];
    // the node the pod runs on: its shim asks that node's vault (a pod elsewhere re-takes)
    if (handover) envs.push({ name: ENV_NODE_NAME, valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    if (c.env) for (const e of envs) patch.push({ op: 'add', path: ptr(...base, 'env', '-'), value: e });
    else patch.push({ op: 'add', path: ptr(...base, 'env'), value: envs });
    wrappedCount++;
  }
  if (wrappedCount === 0 && !again && !containers.some((c) => wanted.includes(c.name) && isWrapped(c))) {
    return deny(`pod has no container to restore into for LockCheckpoint ${ref}`, ref);
  }

  // Not Ready until the agent saw every shim report its locks held (the gate is set once).
  if (!(pod.spec?.readinessGates ?? []).some((g) => g.conditionType === POD_CONDITION_LOCKS_HELD)) {
    const gate = { conditionType: POD_CONDITION_LOCKS_HELD };
    patch.push(pod.spec?.readinessGates ? { op: 'add', path: '/spec/readinessGates/-', value: gate } : { op: 'add', path: '/spec/readinessGates', value: [gate] });
  }

  if (pin) {
    const ops = pinToNode(pod, node!);
    if ('error' in ops) return deny(ops.error, ref);
    patch.push(...ops);
  }
  // a pod found by its checkpoint's target policy carries the annotation from now on (the agent
  // and users see which checkpoint it restores from)
  if (opts.matched && pod.metadata?.annotations?.[ANNOTATION_RESTORE_FROM] === undefined) {
    patch.push(pod.metadata?.annotations
      ? { op: 'add', path: ptr('metadata', 'annotations', ANNOTATION_RESTORE_FROM), value: target.name }
      : { op: 'add', path: '/metadata/annotations', value: { [ANNOTATION_RESTORE_FROM]: target.name } });
  }

  const restoredPod: RestoredPod = {
    name: podName,
    ...(pod.metadata?.uid ? { uid: pod.metadata.uid } : {}),
    ...(node && pin ? { nodeName: node } : {}),
    time: again && restored?.time ? restored.time : opts.now,
  };
  return {
    allowed: true,
    ...(patch.length > 0 ? { patch } : {}),
    ...(again ? {} : { restoredPod }),
    checkpoint: ref,
    message: again ? `already restoring from ${ref}` : `restoring locks from ${ref}`,
  };
}
