/**
 * Where the restore shim puts descriptions whose recorded fd number the runtime itself already
 * uses. Node.js opens 15 fds before the first line of JavaScript runs (measured on Node 20 with
 * strace: an epoll fd, a signal pipe and an eventfd for each of its three event loops — the main
 * one, the platform's delayed-task thread's — plus libuv's global signal-lock pipe, i.e. fds
 * 3–17), and keeps their numbers in memory, so they cannot be moved; a program that held locked
 * files at low numbers collides with them almost always.
 *
 *  - 'direct': no recorded number is taken; every description is placed where it belongs.
 *  - 'private-table' (one Node.js start): the colliding descriptions wait on temporary numbers,
 *    and liblockmig moves them onto their numbers inside the final exec step, on a private fd
 *    table of the main thread (see restore-exec.ts and native/lockmig.c).
 *  - 'reexec' (two Node.js starts, the fallback): the shim re-executes itself once with every
 *    recorded number held by a placeholder, so the second runtime's fds land elsewhere. Used when
 *    liblockmig is not there (built without a C compiler) or unshare(CLONE_FILES) is refused
 *    (seccomp); the shim logs why.
 */
export type FdPlacement =
  | { readonly kind: 'direct' }
  | { readonly kind: 'private-table'; readonly deferred: readonly number[] }
  | { readonly kind: 'reexec'; readonly reason: string };

/** Pure: the strategy for the recorded numbers `busy` that are open in this process right now. */
export function chooseFdPlacement(busy: readonly number[], o: { readonly native: boolean; readonly nativeProblem?: string }): FdPlacement {
  if (busy.length === 0) return { kind: 'direct' };
  if (!o.native) return { kind: 'reexec', reason: `liblockmig is not available: ${o.nativeProblem ?? 'not built'}` };
  return { kind: 'private-table', deferred: [...busy] };
}
