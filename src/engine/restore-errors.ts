/**
 * Typed restore failures. The CLI maps each class to an exit code (see
 * src/cli/commands/restore.ts); RestoreRefused lives in paths.ts with the path rules.
 */
import type { LockHolder } from './restore-holder.js';
import { describeHolders } from './restore-holder.js';

/** A lock could not be taken before the timeout; names who holds it. */
export class LockTimeout extends Error {
  readonly path: string;
  readonly kind: string;
  readonly type: string;
  readonly range: string;
  readonly holders: readonly LockHolder[];
  readonly waitedMs: number;
  constructor(args: { path: string; kind: string; type: string; range: string; holders: readonly LockHolder[]; waitedMs: number; pending: number }) {
    super(`timed out after ${args.waitedMs} ms waiting for a ${args.kind} ${args.type} lock on ${JSON.stringify(args.path)} (range ${args.range})`
      + `${args.pending > 1 ? ` and ${args.pending - 1} more` : ''}: ${describeHolders(args.holders)}`);
    this.name = 'LockTimeout';
    this.path = args.path;
    this.kind = args.kind;
    this.type = args.type;
    this.range = args.range;
    this.holders = args.holders;
    this.waitedMs = args.waitedMs;
  }
}

/** Recorded fd numbers already used in this process by something that is not ours to replace. */
export class FdConflict extends Error {
  readonly fds: readonly number[];
  constructor(fds: readonly number[]) {
    super(`fd numbers ${fds.join(', ')} are already open in this process (Node.js internals or inherited); `
      + 'the restore shim reserves them by re-executing itself, library callers pass onConflict: "remap"');
    this.name = 'FdConflict';
    this.fds = fds;
  }
}

/** Any other failure while reopening or locking, with the file it concerns and the cause. */
export class RestoreFailed extends Error {
  readonly path: string;
  constructor(what: string, path: string, cause: unknown) {
    super(`${what} ${JSON.stringify(path)}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'RestoreFailed';
    this.path = path;
  }
}
