/**
 * importCheckpoint: turn a CRIU image directory or a container checkpoint archive (kubelet /
 * CRI-O, Podman, containerd) into a lockmig checkpoint directory — the building block for a
 * LockCheckpoint whose source is a kubelet checkpoint already on the node.
 *
 * The input is read and fully validated first (src/image/input.ts: bounded, nothing extracted
 * to disk); only then is `outDir` written, with writeCheckpoint's guarantees: every image is
 * written to a temporary name, fsynced and renamed, the manifest last, so `outDir` either holds
 * a complete checkpoint or no manifest. A failure leaves an existing `outDir` without its
 * manifest (never half of one checkpoint and half of another).
 *
 * Errors: ImageError for anything wrong with the input (the CLI's exit code 5); errors of the
 * file system for `outDir`.
 */
import { performance } from 'node:perf_hooks';
import { countLocks, writeCheckpoint, type Checkpoint, type LockKind } from '../image/index.js';
import { detectInput, loadCheckpoint, type InputKind } from '../image/input.js';
import type { ArchiveImportOptions } from '../image/archive/index.js';

export interface ImportOptions extends ArchiveImportOptions {
  /** logs progress (every 256 MiB of archive) and the outcome; a winston Logger fits */
  readonly logger?: { info(message: string, meta?: Record<string, unknown>): unknown; warn(message: string, meta?: Record<string, unknown>): unknown };
}

export interface ImportResult {
  readonly input: string;
  readonly kind: InputKind;
  readonly outDir: string;
  readonly checkpoint: Checkpoint;
  readonly counts: { readonly files: number; readonly fds: number; readonly locks: number; readonly byKind: Record<LockKind, number>; readonly skipped: number };
  readonly readMs: number;
  readonly writeMs: number;
}

export async function importCheckpoint(input: string, outDir: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const kind = detectInput(input);
  const log = opts.logger;
  const t0 = performance.now();
  const ckpt = await loadCheckpoint(input, {
    ...opts,
    onProgress: (offset) => { opts.onProgress?.(offset); log?.info('progress', { input, bytesRead: offset }); },
  });
  const t1 = performance.now();
  writeCheckpoint(outDir, ckpt);
  const t2 = performance.now();
  for (const k of ckpt.skipped.filter((s) => s.locked)) log?.warn('lock not importable', { pid: k.pid, fd: k.fd, target: k.target, reason: k.reason, detail: k.message });
  for (const w of ckpt.warnings ?? []) log?.warn('checkpoint warning', { warning: w });
  const result: ImportResult = {
    input, kind, outDir, checkpoint: ckpt,
    counts: { files: ckpt.files.length, fds: ckpt.fds.length, locks: ckpt.locks.length, byKind: countLocks(ckpt.locks), skipped: ckpt.skipped.length },
    readMs: t1 - t0, writeMs: t2 - t1,
  };
  log?.info('imported', { input, kind, outDir, ...result.counts, readMs: Math.round(result.readMs), writeMs: Math.round(result.writeMs) });
  return result;
}
