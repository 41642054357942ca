/**
 * Pure: what a restore pod's shims reported, as the cluster should show it — the pod condition
 * behind the readiness gate `lockmig.dev/locks-held`, and the LockCheckpoint's `status.restore`.
 *
 * Inputs are the pod object and, per wrapped container, the state file its shim wrote (read by
 * restore-watch.ts through the container's own root). The lock-free window is computed against
 * the source's exit as its agent saw it (`status.agent.sourceExit`): with CLOCK_MONOTONIC when
 * both readings come from the same kernel (same boot id), else with the wall clocks.
 */
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { ClockReading, LockCounts, RestoreReport } from '../api/index.js';
import type { RestoreStateFile } from '../engine/restore-state.js';

export const ENV_RESTORE_FROM = 'LOCKMIG_RESTORE_FROM';

export interface WrappedContainer {
  readonly name: string;
  /** the --state-file argument the webhook gave its shim */
  readonly stateFile: string;
}

/** Containers the webhook wrapped (env LOCKMIG_RESTORE_FROM) that write a state file. */
export function wrappedContainers(pod: V1Pod): WrappedContainer[] {
  const out: WrappedContainer[] = [];
  for (const c of pod.spec?.containers ?? []) {
    if (!(c.env ?? []).some((e) => e.name === ENV_RESTORE_FROM)) continue;
    const f = stateFileOf(c);
    if (f) out.push({ name: c.name, stateFile: f });
  }
  return out;
}

function stateFileOf(c: V1Container): string | undefined {
  const argv = [...(c.command ?? []), ...(c.args ?? [])];
  const end = argv.indexOf('--');
  const i = argv.indexOf('--state-file');
  if (i < 0 || (end >= 0 && i > end)) return undefined;
  const v = argv[i + 1];
  return v && v.startsWith('/') ? v : undefined;
}

export interface ContainerView {
  readonly name: string;
  readonly running: boolean;
  readonly restartCount: number;
  /** the shim's state file, when one was read */
  readonly state?: RestoreStateFile;
  /** why it could not be read (not written yet is not an error: leave both undefined) */
  readonly stateError?: string;
  /** the state file was written by the process running now (same start time) */
  readonly current?: boolean;
  /** the last termination, when the container is not running */
  readonly lastExit?: { readonly exitCode: number; readonly message?: string };
}

export interface RestoreSummary {
  readonly report: RestoreReport;
  readonly condition: { readonly status: 'True' | 'False'; readonly reason: string; readonly message: string };
  /** every container holds its locks: the condition is True and nothing more will change */
  readonly done: boolean;
}

/** Milliseconds from the source's exit to the moment this shim held its locks; 0 when nothing had to be re-taken. */
export function windowMs(s: RestoreStateFile, source: ClockReading | undefined): number | undefined {
  if (s.locks.total - s.handedOver <= 0) return 0;
  if (!source) return undefined;
  if (source.bootID && s.bootID === source.bootID && source.monotonicNs) {
    const d = (BigInt(s.monotonicNs) - BigInt(source.monotonicNs)) / 1_000_000n;
    return d < 0n ? 0 : Number(d);
  }
  const d = Date.parse(s.time) - Date.parse(source.time);
  return Number.isFinite(d) ? Math.max(0, d) : undefined;
}

function addCounts(a: LockCounts, b: RestoreStateFile['locks']): LockCounts {
  return { posix: a.posix + b.posix, flock: a.flock + b.flock, ofd: a.ofd + b.ofd, lease: a.lease + b.lease, total: a.total + b.total };
}

export function summarizeRestore(pod: V1Pod, nodeName: string, views: readonly ContainerView[], source: ClockReading | undefined): RestoreSummary {
  const base = {
    podName: pod.metadata?.name ?? '',
    ...(pod.metadata?.uid ? { podUID: pod.metadata.uid } : {}),
    nodeName,
  };
  const held = views.filter((v) => v.state?.state === 'held');
  const failed = views.filter((v) => v.state?.state === 'failed' && !v.running);
  if (views.length > 0 && held.length === views.length) {
    let locks: LockCounts = { posix: 0, flock: 0, ofd: 0, lease: 0, total: 0 };
    let handedOver = 0;
    let notRestored = 0;
    let window: number | undefined = 0;
    let last = 0;
    let heldTime = '';
    for (const v of held) {
      const s = v.state!;
      locks = addCounts(locks, s.locks);
      handedOver += s.handedOver;
      notRestored += s.notRestored;
      const w = windowMs(s, source);
      window = w === undefined || window === undefined ? undefined : Math.max(window, w);
      const t = Date.parse(s.time);
      if (t >= last) { last = t; heldTime = s.time; }
    }
    const retaken = locks.total - handedOver;
    const restarted = held.filter((v) => v.current === false).map((v) => v.name);
    const message = `${locks.total} lock(s) held by pod ${base.podName}`
      + ` (${handedOver} handed over with their open file descriptions, never free; ${retaken} re-taken`
      + `${window === undefined ? ', window unknown: the source\'s exit was not seen' : `; longest window ${window} ms`})`
      + (notRestored > 0 ? `; ${notRestored} recorded lock(s) could not be restored (see the shim's log)` : '')
      + (restarted.length > 0 ? `; container(s) ${restarted.join(', ')} restarted since and run without the restored locks` : '');
    return {
      done: true,
      condition: { status: 'True', reason: 'LocksHeld', message },
      report: {
        ...base, state: 'Held', heldTime, locks, handedOver, notRestored,
        ...(window !== undefined ? { windowMilliseconds: window } : {}), message,
      },
    };
  }
  if (failed.length > 0) {
    const f = failed[0]!;
    const e = f.state!.error;
    const message = `container ${f.name} of pod ${base.podName} could not restore its locks${e ? ` (exit ${e.exitCode}, ${e.name}): ${e.message}` : ''}; the kubelet retries it`;
    return { done: false, condition: { status: 'False', reason: 'RestoreFailed', message }, report: { ...base, state: 'Failed', reason: 'RestoreFailed', message } };
  }
  const waiting = views.filter((v) => v.state?.state !== 'held').map((v) => v.name);
  const errors = views.filter((v) => v.stateError).map((v) => `${v.name}: ${v.stateError}`);
  const message = `waiting for the restore shim of container(s) ${waiting.join(', ') || '(none wrapped)'} in pod ${base.podName} to hold its locks`
    + (errors.length > 0 ? `; ${errors.join('; ')}` : '');
  return { done: false, condition: { status: 'False', reason: 'Restoring', message }, report: { ...base, state: 'Restoring', message } };
}
