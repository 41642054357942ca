/**
 * The agent's work for one assignment: find the source pod's processes by cgroup, dump each
 * selected container's locks with the lock engine, write one image per container, optionally
 * take the OFD/flock descriptions into the handover vault, and describe the outcome as the
 * `status.agent` report. Also: deleting a checkpoint's images (finalizer protocol).
 *
 * Everything the outside world provides is passed in (`AgentDeps`): the dump engine, the image
 * writer, the clock, the vault; so the flow is tested with real processes and real images while
 * the Kubernetes side stays in agent.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { V1Pod } from '@kubernetes/client-node';
import {
  effectiveSpec, nodeLocalDir, LockCheckpointError, type AgentReport, type LockCheckpoint, type LockCounts, type StorageKind,
} from '../api/index.js';
import { countLocks, type Checkpoint, type LockKind } from '../image/index.js';
import type { Logger } from '../log/logger.js';
import type { DumpOptions } from '../engine/dump.js';
import { findPodProcesses, type CgroupLine, type PodProcess } from '../proc/cgroup.js';
import { containerImageDir, vaultKey } from './layout.js';
import { ClaimWriteError, ImagesTooLarge, planConfigMaps, readImageFiles, writeThroughMount, type ConfigMapPlan } from './storage.js';
import { cgroupPodUID, selectContainers, topProcess } from './select.js';
import { readStatus } from '../proc/index.js';

/** Lock kinds that belong to an open file description, and so can be handed over without a window. */
const DESCRIPTION_KINDS: ReadonlySet<LockKind> = new Set<LockKind>(['OFD', 'FLOCK', 'LEASE']);

/** The vault as the agent uses it (src/handover/vault.ts implements it). */
export interface VaultPort {
  readonly socketPath: string;
  takeOver(name: string, ckpt: Checkpoint, opts: { matcher: RestorePodMatcher; releaseAfterMs?: number; hold?: boolean }): unknown;
  release(name: string, reason?: 'timeout' | 'cancelled' | 'vault-closed'): boolean;
  list(): ReadonlyArray<{ readonly name: string; readonly state: string }>;
  /** src/handover's Vault emits this when it closes descriptions nobody received */
  on?(event: 'released', cb: (e: { checkpoint: string; reason: string; files: number }) => void): unknown;
}

/**
 * Has the vault lost checkpoint ns/name's descriptions: no entry at all (the agent restarted:
 * a new vault) or only released ones (hold time over)? Delivered entries are not lost.
 */
export function vaultLost(vault: VaultPort | undefined, namespace: string, name: string): boolean {
  const mine = (vault?.list() ?? []).filter((e) => e.name.startsWith(`${namespace}/${name}.`));
  return !mine.some((e) => e.state === 'held' || e.state === 'sending' || e.state === 'delivered');
}

/** Does the vault hold (or is it sending) any entry of checkpoint ns/name? */
export function vaultHolds(vault: VaultPort | undefined, namespace: string, name: string): boolean {
  return (vault?.list() ?? []).some((e) => e.name.startsWith(`${namespace}/${name}.`) && (e.state === 'held' || e.state === 'sending'));
}

/**
 * Who may receive a checkpoint's descriptions in the cluster: a process in the cgroup of the
 * restore pod. The pod does not exist when the vault takes the descriptions (it is created after
 * the webhook admitted it), so the agent sets its UID once it sees status.restoredPod; until
 * then every peer is told "not ready" (it may retry). Implements the handover TargetMatcher shape.
 */
export class RestorePodMatcher {
  private podUID: string | undefined;
  constructor(readonly checkpoint: string, private readonly parse: (path: string) => { podUID: string } | undefined) {}
  setTarget(podUID: string): void {
    this.podUID = podUID.toLowerCase();
  }
  /** forget the target (its claim lapsed): peers get the retryable not-ready until the next one is known */
  clearTarget(): void {
    this.podUID = undefined;
  }
  target(): string | undefined {
    return this.podUID;
  }
  describe(): string {
    return this.podUID ? `pod ${this.podUID}` : `the restore pod of ${this.checkpoint} (not admitted yet)`;
  }
  match(peer: { readonly cgroups: readonly CgroupLine[] }): { ok: true } | { ok: false; reason: string; notReady?: boolean } {
    // not-ready (retryable): the shim of a pod that started before the agent learnt its UID retries
    if (!this.podUID) return { ok: false, notReady: true, reason: `no restore pod has been identified for ${this.checkpoint} yet` };
    let seen = false;
    for (const l of peer.cgroups) {
      const k = this.parse(l.path);
      if (!k) continue;
      if (k.podUID !== this.podUID) return { ok: false, reason: `peer belongs to pod ${k.podUID}, not the restore pod ${this.podUID}` };
      seen = true;
    }
    return seen ? { ok: true } : { ok: false, reason: `peer is not in any pod cgroup (want pod ${this.podUID})` };
  }
}

export interface AgentDeps {
  readonly node: string;
  readonly storageRoot: string;
  readonly procRoot: string;
  readonly logger: Logger;
  readonly dump: (opts: DumpOptions) => Checkpoint;
  readonly write: (dir: string, ckpt: Checkpoint) => void;
  readonly now: () => Date;
  readonly vault?: VaultPort;
  readonly newMatcher?: (checkpoint: string) => RestorePodMatcher;
  /** find the pod's processes (default: scan procRoot) */
  readonly findProcesses?: (podUID: string) => PodProcess[];
}

export class AgentFailure extends Error {
  constructor(readonly reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AgentFailure';
  }
}

const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The fields every agent report of `cp` starts with (dump and import alike). */
export function reportBase(cp: LockCheckpoint, node: string, startTime: Date): { nodeName: string; podUID?: string; observedGeneration?: number; startTime: string } {
  return {
    nodeName: node,
    ...(cp.status?.sourcePodUID ? { podUID: cp.status.sourcePodUID } : {}),
    ...(cp.metadata.generation !== undefined ? { observedGeneration: cp.metadata.generation } : {}),
    startTime: iso(startTime),
  };
}

/** A Failed report on top of `base` (logged once as `what`), for the agent's dump and import paths. */
export function failureReporter(base: Omit<AgentReport, 'state'>, log: Logger, what: string, now: () => Date): (reason: string, message: string) => DumpOutcome {
  return (reason, message) => {
    log.warn(what, { reason, error: message });
    const t = now();
    return { report: { ...base, state: 'Failed', reason, message, completionTime: iso(t), heartbeatTime: iso(t) }, matchers: [], lockPids: [] };
  };
}

function toCounts(c: Record<LockKind, number>): LockCounts {
  return { posix: c.POSIX, flock: c.FLOCK, ofd: c.OFD, lease: c.LEASE, total: c.POSIX + c.FLOCK + c.OFD + c.LEASE };
}

/** The result of a dump: the report to write, plus the matchers of vault entries (for identify-target). */
export interface DumpOutcome {
  readonly report: AgentReport;
  readonly matchers: readonly RestorePodMatcher[];
  /** host pids that own a recorded lock (POSIX) or a recorded description: their exit starts any window */
  readonly lockPids: readonly number[];
  /** api storage: the ConfigMaps to create before the report says Dumped */
  readonly configMaps?: readonly ConfigMapPlan[];
}

/**
 * Where the source pod mounts the claim: a container of the pod whose mount of the claim (or of
 * a part of it, mount subPath) contains `subPath`. Undefined when no container reaches it.
 */
export function claimMount(pod: V1Pod, claimName: string, subPath: string, containers: readonly string[]): { container: string; mountPath: string; rel: string } | undefined {
  const vols = new Set((pod.spec?.volumes ?? []).filter((v) => v.persistentVolumeClaim?.claimName === claimName).map((v) => v.name));
  const all = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])];
  for (const c of [...all].sort((a, b) => Number(!containers.includes(a.name)) - Number(!containers.includes(b.name)))) {
    for (const m of c.volumeMounts ?? []) {
      if (!vols.has(m.name) || m.readOnly) continue;
      const ms = (m.subPath ?? '').replace(/^\/+|\/+$/g, '');
      if (ms === '') return { container: c.name, mountPath: m.mountPath, rel: subPath };
      if (subPath.startsWith(`${ms}/`)) return { container: c.name, mountPath: m.mountPath, rel: subPath.slice(ms.length + 1) };
    }
  }
  return undefined;
}

/**
 * The agent's node-local directory of a checkpoint. Every dump writes it (node-local storage
 * is it; api and persistentVolumeClaim storage copy from it).
 */
export function checkpointDir(cp: LockCheckpoint, storageRoot: string): string {
  const spec = effectiveSpec(cp.spec, cp.metadata.name);
  try {
    return nodeLocalDir(storageRoot, cp.metadata.namespace, spec.storage.kind === 'persistentVolumeClaim' ? cp.metadata.name : spec.storage.path);
  } catch (err) {
    if (err instanceof LockCheckpointError) throw new AgentFailure('InvalidStorage', err.message, { cause: err });
    throw err;
  }
}

/**
 * api storage: the ConfigMaps for the node-local images of `containers` in `dir`. Images over the
 * API limit stay node-local (fallback NodeLocal, the restore pod is then pinned to `node`) or fail
 * the checkpoint (fallback None).
 */
export function planApiStorage(
  st: { readonly fallback: 'NodeLocal' | 'None' }, name: string, ns: string, dir: string, containers: readonly string[], node: string,
): { ok: true; storage: StorageKind; configMaps?: ConfigMapPlan[]; imageLocation: string; storageNote: string } | { ok: false; reason: string; message: string } {
  try {
    const configMaps = planConfigMaps(name, readImageFiles(dir, containers));
    return { ok: true, storage: 'api', configMaps, imageLocation: `configmaps://${ns}/${configMaps.map((c) => c.name).join(',')}`, storageNote: '' };
  } catch (err) {
    if (!(err instanceof ImagesTooLarge)) throw err;
    if (st.fallback === 'None') return { ok: false, reason: 'ImagesTooLarge', message: `${err.message} (storage.api.fallback is None)` };
    return { ok: true, storage: 'nodeLocal', imageLocation: dir, storageNote: `; ${err.message}: kept on node ${node} only (the restore pod is pinned there)` };
  }
}

/**
 * Dump `pod` for checkpoint `cp`. Never throws for expected failures: they come back as a
 * report with state Failed and a CamelCase reason.
 */
export function dumpForCheckpoint(cp: LockCheckpoint, pod: V1Pod | undefined, deps: AgentDeps, startTime: Date = deps.now()): DumpOutcome {
  const ns = cp.metadata.namespace;
  const name = cp.metadata.name;
  const log = deps.logger.child({ namespace: ns, name });
  const t0 = performance.now();
  const base = reportBase(cp, deps.node, startTime);
  const failed = failureReporter(base, log, 'dump failed', deps.now);
  try {
    const spec = effectiveSpec(cp.spec, name);
    const dir = checkpointDir(cp, deps.storageRoot);
    if (!pod) return failed('SourcePodNotFound', `source pod ${ns}/${cp.spec.sourcePodName} does not exist`);
    if (cp.status?.sourcePodUID && pod.metadata?.uid !== cp.status.sourcePodUID) {
      return failed('SourcePodReplaced', `source pod ${ns}/${cp.spec.sourcePodName} has UID ${pod.metadata?.uid}, not ${cp.status.sourcePodUID} (it was replaced)`);
    }
    if (pod.spec?.nodeName && pod.spec.nodeName !== deps.node) {
      return failed('WrongNode', `source pod runs on node ${pod.spec.nodeName}, this agent is on ${deps.node}`);
    }
    const uid = cgroupPodUID(pod);
    if (!uid) return failed('SourcePodNotFound', `source pod ${ns}/${cp.spec.sourcePodName} has no UID`);
    const find = deps.findProcesses ?? ((u: string) => findPodProcesses(u, { procRoot: deps.procRoot }));

    // Processes may exit between the scan and the dump: rescan once.
    let images: Array<{ container: string; ckpt: Checkpoint; pids: readonly number[] }> = [];
    for (let attempt = 1; ; attempt++) {
      const sel = selectContainers(pod, find(uid), spec.containers);
      if (!sel.ok) return failed(sel.reason, sel.message);
      for (const n of sel.notes) log.info(n);
      try {
        images = sel.containers.map((c) => {
          log.info('dumping container', { container: c.name, pids: c.pids.length });
          const ckpt = deps.dump({
            pids: c.pids, kinds: spec.lockKinds,
            source: { pod: { namespace: ns, name: pod.metadata?.name ?? cp.spec.sourcePodName ?? '', uid: pod.metadata?.uid ?? uid, containers: [c.name] } },
            logger: log,
            // long dumps show progress (every 5,000 fds scanned)
            progressEvery: 5000,
            onProgress: (done, total) => { if (total >= 5000) log.info('dump progress', { container: c.name, fdsScanned: done, fdsTotal: total }); },
          });
          return { container: c.name, ckpt, pids: c.pids };
        });
        break;
      } catch (err) {
        if ((err as { code?: string }).code === 'NO_PROCESS' && attempt < 2) { log.info('a process exited during the dump; rescanning'); continue; }
        throw err;
      }
    }

    // What each container ran (its top process's command line): a replacement without an
    // explicit command that runs the same image is wrapped with it by the webhook.
    const commands = images.flatMap((c) => {
      const top = topProcess(c.pids, (p) => { try { return readStatus(p).ppid; } catch { return undefined; } });
      const image = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])].find((x) => x.name === c.container)?.image;
      if (top === undefined || !image) return [];
      try {
        const argv = fs.readFileSync(`${deps.procRoot}/${top}/cmdline`, 'utf8').split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
        return argv.length > 0 && argv.length <= 256 && argv.join(' ').length <= 16384 ? [{ container: c.container, image, argv }] : [];
      } catch { return []; }
    });
    // A lock that cannot be recorded would silently be missing in the restore pod: such a
    // checkpoint must never become Ready (nothing is written, the report says which fds).
    const lockedSkipped = images.flatMap((i) => i.ckpt.skipped.filter((s) => s.locked).map((s) => `container ${i.container}: fd ${s.fd} of pid ${s.pid} (${s.target}): ${s.message}`));
    if (lockedSkipped.length > 0) {
      return failed('UnrecordableLocks', `${lockedSkipped.length} locked fd(s) cannot be recorded, so a restore would start without their locks: ${lockedSkipped.slice(0, 5).join('; ')}${lockedSkipped.length > 5 ? `; and ${lockedSkipped.length - 5} more` : ''}`);
    }
    try {
      for (const im of images) deps.write(containerImageDir(dir, im.container), im.ckpt);
    } catch (err) {
      // no half image left behind (a full disk, an I/O error): this checkpoint fails, and nothing of
      // it may be found later, not even an image from an earlier attempt
      try { fs.rmSync(dir, { recursive: true, force: true }); } catch (e) { log.warn('could not remove the partial images', { dir, error: (e as Error).message }); }
      throw err;
    }

    // api / persistentVolumeClaim storage: a copy of the node-local directory
    let storage: StorageKind = spec.storage.kind;
    let configMaps: ConfigMapPlan[] | undefined;
    let storageNote = '';
    let imageLocation = dir;
    const containerNames = images.map((i) => i.container);
    if (spec.storage.kind === 'api') {
      const planned = planApiStorage(spec.storage, name, ns, dir, containerNames, deps.node);
      if (!planned.ok) return failed(planned.reason, planned.message);
      ({ storage, storageNote, imageLocation } = planned);
      configMaps = planned.configMaps;
    } else if (spec.storage.kind === 'persistentVolumeClaim') {
      const st = spec.storage;
      const m = claimMount(pod, st.claimName, st.subPath, containerNames);
      const c = m && images.find((i) => i.container === m.container);
      const pid = c?.ckpt.processes[0]?.pid;
      if (!m || pid === undefined) {
        return failed('ClaimNotReachable', `the agent writes into claim ${st.claimName} through the source pod's own mount of it, but no dumped container of pod ${cp.spec.sourcePodName} mounts it writable${m ? ` (container ${m.container} was not dumped)` : ''} at a path containing subPath "${st.subPath}"; mount the claim in the source pod or use storage.api`);
      }
      try {
        writeThroughMount(pid, m.mountPath, m.rel, readImageFiles(dir, containerNames));
      } catch (err) {
        if (err instanceof ClaimWriteError) return failed(err.reason, err.message);
        throw err;
      }
      imageLocation = `pvc://${st.claimName}/${st.subPath}`;
    }
    const counts = toCounts(countLocks(images.flatMap((i) => i.ckpt.locks)));
    const files = images.reduce((n, i) => n + i.ckpt.files.length, 0);
    const skippedFds = images.reduce((n, i) => n + i.ckpt.skipped.length, 0);

    // Handover: take the locked descriptions into the vault while the source still runs.
    const matchers: RestorePodMatcher[] = [];
    let handoverNote = '';
    const wantHandover = spec.restore.mode !== 'Retake' && spec.restore.holdSeconds > 0;
    if (wantHandover && !deps.vault && spec.restore.mode === 'Handover') {
      return failed('HandoverUnavailable', 'restore mode Handover needs the agent\'s vault (lockmig agent --vault-socket), which is not running');
    }
    // The webhook cannot know which containers had OFD/flock locks, so when anything moves by
    // handover, every dumped container gets a vault entry (possibly empty) for its shim to collect.
    if (wantHandover && deps.vault && images.some((im) => im.ckpt.locks.some((l) => DESCRIPTION_KINDS.has(l.kind)))) {
      for (const im of images) {
        const key = vaultKey(ns, name, im.container);
        const matcher = deps.newMatcher?.(key) ?? new RestorePodMatcher(key, () => undefined);
        try {
          if (deps.vault.list().some((e) => e.name === key && (e.state === 'held' || e.state === 'sending'))) deps.vault.release(key, 'cancelled');
          deps.vault.takeOver(key, im.ckpt, { matcher, releaseAfterMs: spec.restore.holdSeconds * 1000 });
          matchers.push(matcher);
        } catch (err) {
          for (const m of matchers) deps.vault.release(m.checkpoint, 'cancelled');
          if (spec.restore.mode === 'Handover') return failed('HandoverFailed', `cannot take over the descriptions of container "${im.container}": ${(err as Error).message}`);
          handoverNote = `; handover not possible (${(err as Error).message}), the restore pod will re-take the locks`;
          matchers.length = 0;
          log.warn('handover takeover failed; falling back to re-take', { container: im.container, error: (err as Error).message });
          break;
        }
      }
    }
    const now = deps.now();
    const ms = Math.round(performance.now() - t0);
    const state = matchers.length > 0 ? 'HandoverReady' as const : 'Dumped' as const;
    const message = `${counts.total} lock(s) (${counts.posix} POSIX, ${counts.flock} flock, ${counts.ofd} OFD, ${counts.lease} lease) on ${files} file(s) from ${images.length} container(s) [${images.map((i) => i.container).join(', ')}]`
      + (state === 'HandoverReady' ? `; the vault holds the descriptions of ${matchers.length} container(s)` : '')
      + handoverNote + storageNote;
    log.info('dump finished', { state, locks: counts, files, skippedFds, dumpMilliseconds: ms, imageLocation: dir });
    return {
      report: {
        ...base, state, completionTime: iso(now), heartbeatTime: iso(now), dumpMilliseconds: ms,
        imageLocation, locks: counts, files, skippedFds, message, storage,
        ...(commands.length > 0 ? { commands } : {}),
        ...(configMaps ? { configMaps: configMaps.map((c) => ({ name: c.name, items: c.items })) } : {}),
        ...(state === 'HandoverReady' ? { handoverSocket: deps.vault!.socketPath } : {}),
      },
      matchers,
      lockPids: [...new Set(images.flatMap((i) => i.ckpt.locks.map((l) => l.pid)))].sort((a, b) => a - b),
      ...(configMaps ? { configMaps } : {}),
    };
  } catch (err) {
    if (err instanceof AgentFailure) return failed(err.reason, err.message);
    const code = (err as { code?: string }).code;
    const reason = (err as Error).name === 'DumpError' ? `Dump${code ? code.split('_').map((w) => w[0] + w.slice(1).toLowerCase()).join('') : 'Failed'}` : 'DumpFailed';
    return failed(reason, (err as Error).message);
  }
}

/** Delete a checkpoint's images and drop its vault entries (finalizer protocol). */
export function deleteImages(cp: LockCheckpoint, deps: Pick<AgentDeps, 'storageRoot' | 'logger' | 'vault' | 'now' | 'node'>): AgentReport {
  const ns = cp.metadata.namespace;
  const name = cp.metadata.name;
  const prev = cp.status?.agent;
  const base: AgentReport = { ...(prev ?? { state: 'Dumped' as const }), nodeName: deps.node, heartbeatTime: iso(deps.now()) };
  for (const e of deps.vault?.list() ?? []) {
    if (e.name.startsWith(`${ns}/${name}.`) && (e.state === 'held' || e.state === 'sending')) deps.vault!.release(e.name, 'cancelled');
  }
  let dir: string;
  try {
    dir = checkpointDir(cp, deps.storageRoot);
  } catch (err) {
    // nothing of ours can be there: nothing to delete
    deps.logger.warn('no node-local images to delete', { namespace: ns, name, error: (err as Error).message });
    return { ...base, imagesDeleted: true };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  // and the directories above it that are left empty (the namespace's), up to the storage root
  const root = deps.storageRoot.replace(/\/+$/, '');
  for (let d = path.dirname(dir); d.startsWith(`${root}/`); d = path.dirname(d)) {
    try { fs.rmdirSync(d); } catch { break; } // not empty (or gone): stop
  }
  deps.logger.info('deleted checkpoint images', { namespace: ns, name, dir });
  return { ...base, imagesDeleted: true };
}
