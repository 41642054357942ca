/**
 * Pure: what the agent on `node` should do with a LockCheckpoint it sees (docs/api.md, "Agent
 * protocol"). The agent writes only `status.agent`.
 */
import { FINALIZER_IMAGES, type LockCheckpoint } from '../api/index.js';

export type AgentAction =
  | { readonly kind: 'none'; readonly why: string }
  /** dump the source pod (phase Dumping, assigned here, not yet reported, or reported Dumping by an agent that restarted) */
  | { readonly kind: 'dump' }
  /** the object is being deleted: delete the images, drop vault entries, set imagesDeleted */
  | { readonly kind: 'delete-images' }
  /** the vault holds descriptions and a restore pod was admitted: learn its UID for the peer check */
  | { readonly kind: 'identify-target'; readonly podName: string }
  /**
   * we reported HandoverReady but the vault no longer holds the descriptions (the agent restarted,
   * or the hold time ran out) and no restore pod was admitted yet: report Dumped instead, so the
   * webhook makes the next restore pod re-take the locks rather than wait for a vault entry that
   * will never come
   */
  | { readonly kind: 'handover-lost' }
  /** the checkpoint failed (e.g. its source pod was replaced) while the vault holds its descriptions: let them go */
  | { readonly kind: 'release-vault' };

export interface AgentView {
  /** does this agent's vault still hold (or is sending) the checkpoint's descriptions? */
  readonly vaultHolds: boolean;
  /** has it lost them (none held, sent or delivered: an agent restart, the hold time over)? default: !vaultHolds */
  readonly vaultLost?: boolean;
  /**
   * is the loss on record: the vault released them (hold time over), or the previous vault's state
   * file says it still held them when this agent started? false: this agent just does not know them
   * (it restarted after they may have been delivered: the restore pod's report tells). default: true
   */
  readonly lossRecorded?: boolean;
}

export function decideAgentAction(cp: LockCheckpoint, node: string, view: AgentView = { vaultHolds: true }): AgentAction {
  const st = cp.status;
  if (st?.nodeName !== node) return { kind: 'none', why: `assigned to node ${st?.nodeName ?? '(none)'}` };
  const agent = st.agent;
  if (cp.metadata.deletionTimestamp) {
    if (!(cp.metadata.finalizers ?? []).includes(FINALIZER_IMAGES)) return { kind: 'none', why: 'deleting without our finalizer' };
    if (agent?.imagesDeleted) return { kind: 'none', why: 'images already deleted' };
    return { kind: 'delete-images' };
  }
  if (agent && agent.nodeName !== node) return { kind: 'none', why: `status.agent belongs to node ${agent.nodeName}` };
  // a failed checkpoint restores nothing: descriptions held for it would only keep its locks from everyone
  if (st.phase === 'Failed' && view.vaultHolds) return { kind: 'release-vault' };
  if (st.phase === 'Dumping' && (!agent || agent.state === 'Dumping')) return { kind: 'dump' };
  // lost first: a restore pod admitted for a handover that can no longer happen re-takes the locks
  // (its shim falls back when the vault does not know the checkpoint); say so in the status
  // (not once a restore pod holds the locks: an agent restart after the delivery loses nothing)
  const delivered = st.restore?.state === 'Held' && (st.restore.handedOver ?? 0) > 0;
  // An agent that restarted after a restore pod was admitted may simply not know that its
  // predecessor delivered the descriptions: unless the loss is on record, the restore pod's own
  // report decides (Held with descriptions handed over: nothing lost; re-taken or failed: lost).
  const restoreSettled = st.restore?.state === 'Held' || st.restore?.state === 'Failed';
  const lossKnown = view.lossRecorded !== false || !st.restoredPod?.name || restoreSettled;
  if (agent?.state === 'HandoverReady' && !delivered && (view.vaultLost ?? !view.vaultHolds) && lossKnown) return { kind: 'handover-lost' };
  if (agent?.state === 'HandoverReady' && st.restoredPod?.name) return { kind: 'identify-target', podName: st.restoredPod.name };
  return { kind: 'none', why: `phase ${st.phase ?? '(none)'}, agent state ${agent?.state ?? '(none)'}` };
}
