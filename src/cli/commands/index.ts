/**
 * The subcommand table. Modules are loaded lazily so that, for example, the restore shim
 * never pays for loading the Kubernetes client.
 */
export interface Command {
  run(argv: string[]): Promise<number>;
}
export interface CommandEntry {
  summary: string;
  load(): Promise<Command>;
}

export const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  controller: { summary: 'run the LockCheckpoint controller (dispatch, status, finalizers, TTL, leader election)', load: () => import('./controller.js') },
  dump: { summary: 'record the file locks of a process (tree) into a checkpoint directory', load: () => import('./dump.js') },
  inspect: { summary: 'validate a checkpoint directory and print its locks, files and skipped fds', load: () => import('./inspect.js') },
  import: { summary: 'convert CRIU images or a kubelet/CRI-O/Podman checkpoint archive into a lockmig checkpoint directory', load: () => import('./import.js') },
  'export-criu': { summary: 'write a checkpoint as CRIU images (filelocks, files, fdinfo, pstree, inventory) for crit', load: () => import('./export-criu.js') },
  demo: { summary: 'migrate real locks between two processes on this machine and prove it (needs root)', load: () => import('./demo.js') },
  restore: { summary: 'restore shim: reopen recorded files, re-take their locks, exec a command', load: () => import('./restore.js') },
  agent: { summary: 'node agent: dumps the locks of pods assigned to this node, runs the handover vault', load: () => import('./agent.js') },
  webhook: { summary: 'mutating admission webhook that wraps restore pods with the restore shim', load: () => import('./webhook.js') },
  cleanup: { summary: 'delete every LockCheckpoint through the finalizer protocol (the chart\'s pre-delete hook)', load: () => import('./cleanup.js') },
  handover: { summary: 'move a process\'s locks to a new process on this node (OFD/flock with no window)', load: () => import('./handover.js') },
};
