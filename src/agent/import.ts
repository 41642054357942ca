/**
 * The agent's work for a LockCheckpoint whose source is a kubelet checkpoint archive already on
 * this node (spec.source.kubeletCheckpoint, KEP-2008): nothing runs and nothing is stopped. The
 * archive is read from the kubelet's checkpoint directory with the same importer as
 * `lockmig inspect`/`restore --image` (src/image/archive: bounded, nothing extracted, hostile
 * archives refused), and its locks are written as one lockmig image, in the same storage (api
 * ConfigMaps or node-local) as a dump of a running pod, so the webhook and the restore shim work
 * unchanged. The report is Dumped (no handover: there are no descriptions to hold).
 *
 * Refused, each with its own reason in status.agent (never a path outside the directory):
 *   InvalidSpec            the file name is not a plain name (re-checked here: defence in depth)
 *   WrongNode              assigned to another node's agent
 *   ArchiveNotFound        no such file in the kubelet's checkpoint directory
 *   ArchiveRefused         a symlink, directory, device or FIFO instead of a regular file
 *   ArchiveInvalid         what the importer refuses (not an archive, path traversal, links,
 *                          duplicates, oversized entries, bad CRIU images …), its message verbatim
 *   ArchiveNamespaceMismatch  the archive is of a pod of another namespace, or names no pod
 *   ArchiveContainerUnknown   no container name: neither spec.containers nor the archive names one
 *   UnrecordableLocks      a locked fd the archive cannot map to a file (per fd, as the importer says)
 *   ImagesTooLarge         storage.api with fallback None, and the images do not fit in the API
 *   ImportFailed           anything else (writing the images, say), with its message
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { checkCheckpointFileName, effectiveSpec, type AgentReport, type LockCheckpoint, type StorageKind } from '../api/index.js';
import { countLocks, type Checkpoint, type LockKind } from '../image/index.js';
import { ImageError } from '../image/errors.js';
import { loadCheckpoint } from '../image/input.js';
import { AgentFailure, checkpointDir, failureReporter, planApiStorage, reportBase, type AgentDeps, type DumpOutcome } from './dump.js';
import { containerImageDir } from './layout.js';
import type { ConfigMapPlan } from './storage.js';

export interface ImportDeps extends Pick<AgentDeps, 'node' | 'storageRoot' | 'logger' | 'write' | 'now'> {
  /** the kubelet's checkpoint directory on this node, as the agent sees it */
  readonly kubeletCheckpointDir: string;
  /** most bytes of images held in memory while reading the archive (default AGENT_MAX_BUFFERED_BYTES) */
  readonly maxBufferedBytes?: number;
}

const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * Most bytes of CRIU images the agent holds in memory while it reads one archive: half the
 * chart's default memory limit for the agent (512 MiB), so a checkpoint of a process with
 * hundreds of thousands of fds is refused with a clear message instead of getting the agent
 * OOM-killed on its node (`lockmig import` on a workstation allows 512 MiB).
 */
export const AGENT_MAX_BUFFERED_BYTES = 256 << 20;

/**
 * Keep only the locks of `kinds` (spec.lockKinds), and the fds and files of the descriptions
 * that still carry one (a lock checkpoint records locked descriptions only).
 */
export function keepKinds(ckpt: Checkpoint, kinds: readonly LockKind[]): Checkpoint {
  if (kinds.length === 4 || ckpt.locks.every((l) => kinds.includes(l.kind))) return ckpt;
  const locks = ckpt.locks.filter((l) => kinds.includes(l.kind));
  const files = new Set(locks.map((l) => l.fileId));
  const fds = ckpt.fds.filter((f) => files.has(f.fileId));
  const pids = new Set([...fds.map((f) => f.pid), ...locks.map((l) => l.pid)]);
  return { ...ckpt, locks, fds, files: ckpt.files.filter((f) => files.has(f.id)), processes: ckpt.processes.filter((p) => pids.has(p.pid)) };
}

/**
 * Opens `dir/file` without following a symlink and checks that it is a regular file; the
 * importer then reads that very file through /proc/self/fd (no window in which the name could
 * be swapped for a link to somewhere else).
 */
function openArchive(dir: string, file: string): { fd: number; size: number } {
  const p = path.join(dir, file);
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const there = fs.existsSync(dir);
      throw new AgentFailure('ArchiveNotFound', there
        ? `kubelet checkpoint "${file}" is not in ${dir} (list the node's checkpoints: ls ${dir})`
        : `kubelet checkpoint "${file}" cannot be found: the checkpoint directory ${dir} does not exist on this node (the kubelet creates it with its first checkpoint; the agent's --kubelet-checkpoint-dir)`);
    }
    if (code === 'ELOOP') throw new AgentFailure('ArchiveRefused', `${p} is a symbolic link: lockmig reads only a regular file in the kubelet's checkpoint directory`);
    throw new AgentFailure('ArchiveRefused', `cannot open ${p}: ${(err as Error).message}`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new AgentFailure('ArchiveRefused', `${p} is not a regular file (${st.isDirectory() ? 'a directory' : 'a device, FIFO or socket'}): a kubelet checkpoint is a tar archive`);
  }
  return { fd, size: st.size };
}

/** Import the kubelet checkpoint archive `cp` names. Never throws for expected failures: they come back as a Failed report. */
export async function importForCheckpoint(cp: LockCheckpoint, deps: ImportDeps, startTime: Date = deps.now()): Promise<DumpOutcome> {
  const ns = cp.metadata.namespace;
  const name = cp.metadata.name;
  const log = deps.logger.child({ namespace: ns, name });
  const t0 = performance.now();
  const base = reportBase(cp, deps.node, startTime);
  const failed = failureReporter(base, log, 'kubelet checkpoint import failed', deps.now);
  const kc = cp.spec.source?.kubeletCheckpoint;
  if (!kc) return failed('InvalidSpec', 'spec.source.kubeletCheckpoint is not set');
  // the API server's pattern already refused these; an agent never trusts what it is handed
  const bad = typeof kc.file === 'string' ? checkCheckpointFileName(kc.file) : 'must be a string';
  if (bad) return failed('InvalidSpec', `spec.source.kubeletCheckpoint.file ${bad}`);
  if (kc.node !== deps.node) return failed('WrongNode', `the kubelet checkpoint is on node ${kc.node}, this agent is on ${deps.node}`);
  const where = path.join(deps.kubeletCheckpointDir, kc.file);
  let opened: { fd: number; size: number } | undefined;
  try {
    const spec = effectiveSpec(cp.spec, name);
    if (spec.storage.kind === 'persistentVolumeClaim') {
      return failed('InvalidSpec', 'storage.persistentVolumeClaim needs a running source pod (its mount of the claim); use storage.api or storage.nodeLocal');
    }
    const dir = checkpointDir(cp, deps.storageRoot);
    opened = openArchive(deps.kubeletCheckpointDir, kc.file);
    log.info('importing kubelet checkpoint', { archive: where, bytes: opened.size });
    let ckpt: Checkpoint;
    try {
      ckpt = await loadCheckpoint(`/proc/self/fd/${opened.fd}`, {
        maxBufferedBytes: deps.maxBufferedBytes ?? AGENT_MAX_BUFFERED_BYTES,
        onProgress: (offset) => log.info('import progress', { archive: where, bytesRead: offset }),
      });
    } catch (err) {
      if (!(err instanceof ImageError)) throw err;
      // the importer names the file by the descriptor it read: name it as the user knows it
      return failed('ArchiveInvalid', `kubelet checkpoint ${where}: ${err.message.split(`/proc/self/fd/${opened.fd}`).join(kc.file)}`);
    }
    const origin = ckpt.origin ? { ...ckpt.origin, path: where } : undefined;
    ckpt = { ...ckpt, ...(origin ? { origin } : {}) };

    // Only the checkpoint's own namespace: a LockCheckpoint must not read another namespace's pod
    // (its open files, paths and command) any more than it can name one (docs/security.md).
    const pod = ckpt.source.pod;
    if (!pod) {
      return failed('ArchiveNamespaceMismatch', `kubelet checkpoint ${kc.file} names no Kubernetes pod (its spec.dump carries no io.kubernetes.pod.namespace annotation): lockmig imports only archives of pods of the LockCheckpoint's own namespace "${ns}"`);
    }
    if (pod.namespace !== ns) {
      return failed('ArchiveNamespaceMismatch', `kubelet checkpoint ${kc.file} is of pod ${pod.namespace}/${pod.name}, not of a pod in namespace "${ns}": a LockCheckpoint reads only its own namespace's checkpoints`);
    }
    const archived = pod.containers?.[0] ?? ckpt.origin?.container?.name;
    const container = spec.containers[0] ?? archived;
    if (!container) {
      return failed('ArchiveContainerUnknown', `kubelet checkpoint ${kc.file} names no container: set spec.containers to the restore pod's container that gets its locks`);
    }
    ckpt = keepKinds(ckpt, spec.lockKinds);
    // As for a dump: a lock that cannot be mapped to a file would silently be missing in the
    // restore pod, so such a checkpoint never becomes Ready. Each fd as the importer reports it.
    const lockedSkipped = ckpt.skipped.filter((s) => s.locked).map((s) => `fd ${s.fd} of pid ${s.pid} (${s.target}): ${s.reason}: ${s.message}`);
    if (lockedSkipped.length > 0) {
      return failed('UnrecordableLocks', `${lockedSkipped.length} locked fd(s) in kubelet checkpoint ${kc.file} cannot be mapped to a file, so a restore would start without their locks: ${lockedSkipped.slice(0, 5).join('; ')}${lockedSkipped.length > 5 ? `; and ${lockedSkipped.length - 5} more` : ''}`);
    }
    deps.write(containerImageDir(dir, container), ckpt);

    let storage: StorageKind = 'nodeLocal';
    let configMaps: ConfigMapPlan[] | undefined;
    let storageNote = '';
    let imageLocation = dir;
    if (spec.storage.kind === 'api') {
      const planned = planApiStorage(spec.storage, name, ns, dir, [container], deps.node);
      if (!planned.ok) return failed(planned.reason, planned.message);
      ({ storage, storageNote, imageLocation } = planned);
      configMaps = planned.configMaps;
    }
    const c = countLocks(ckpt.locks);
    const counts = { posix: c.POSIX, flock: c.FLOCK, ofd: c.OFD, lease: c.LEASE, total: c.POSIX + c.FLOCK + c.OFD + c.LEASE };
    const now = deps.now();
    const ms = Math.round(performance.now() - t0);
    const from = `kubelet checkpoint ${kc.file} (pod ${pod.namespace}/${pod.name}, container ${archived ?? '(unnamed)'}${ckpt.origin?.engine ? `, ${ckpt.origin.engine}` : ''}, taken ${ckpt.createdAt})`;
    const renamed = archived && archived !== container ? `; restored into container "${container}"` : '';
    const warnings = (ckpt.warnings ?? []).map((w) => `; warning: ${w}`).join('');
    const message = `${counts.total} lock(s) (${counts.posix} POSIX, ${counts.flock} flock, ${counts.ofd} OFD, ${counts.lease} lease) on ${ckpt.files.length} file(s) imported from ${from}${renamed}${warnings}${storageNote}`;
    for (const w of ckpt.warnings ?? []) log.warn('checkpoint warning', { warning: w });
    log.info('kubelet checkpoint imported', { archive: where, container, locks: counts, files: ckpt.files.length, importMilliseconds: ms, imageLocation });
    const report: AgentReport = {
      ...base, state: 'Dumped', completionTime: iso(now), heartbeatTime: iso(now), dumpMilliseconds: ms,
      imageLocation, locks: counts, files: ckpt.files.length, skippedFds: ckpt.skipped.length, message, storage, containers: [container],
      ...(configMaps ? { configMaps: configMaps.map((m) => ({ name: m.name, items: m.items })) } : {}),
    };
    return { report, matchers: [], lockPids: [], ...(configMaps ? { configMaps } : {}) };
  } catch (err) {
    if (err instanceof AgentFailure) return failed(err.reason, err.message);
    return failed('ImportFailed', `kubelet checkpoint ${where}: ${(err as Error).message}`);
  } finally {
    if (opened) fs.closeSync(opened.fd);
  }
}
