import { constants } from 'node:os';

/** errno number → symbolic name (EAGAIN, EBADF, …), built from Node's own table. */
const ERRNO_NAMES: ReadonlyMap<number, string> = (() => {
  const m = new Map<number, string>();
  // First name wins, so 11 is EAGAIN (not its alias EWOULDBLOCK) and 95 is ENOTSUP.
  for (const [name, num] of Object.entries(constants.errno)) if (!m.has(num)) m.set(num, name);
  m.set(11, 'EAGAIN');
  return m;
})();

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

export function errnoNumber(name: string): number {
  const n = (constants.errno as Record<string, number>)[name];
  if (n === undefined) throw new Error(`unknown errno name ${name}`);
  return n;
}

/**
 * A failed system call. `code` is the symbolic errno (EAGAIN, EBADF, …) so callers
 * can branch on it without numbers; `detail` carries context such as the fd or path.
 */
export class SyscallError extends Error {
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(syscall: string, errno: number, detail: Record<string, unknown> = {}, message?: string) {
    const code = errnoName(errno);
    const ctx = Object.entries(detail)
      .map(([k, v]) => `${k}=${typeof v === 'bigint' ? v.toString() : JSON.stringify(v)}`)
      .join(' ');
    super(message ?? `${syscall} failed: ${code}${ctx ? ` (${ctx})` : ''}`);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
    this.detail = detail;
  }
}

/** EAGAIN/EACCES from a lock call: the lock is held by someone else. */
export function isLockBusy(err: unknown): boolean {
  return err instanceof SyscallError && (err.code === 'EAGAIN' || err.code === 'EACCES');
}
