/**
 * Unix-domain SOCK_SEQPACKET sockets with SCM_RIGHTS, bound with koffi on top of the
 * libc handle from libc.ts. Node's `net` cannot pass file descriptors, so the handover
 * vault and the restore shim speak through these calls.
 *
 * Layout facts (LP64 Linux: x86_64 and aarch64 are identical here):
 *   struct iovec   { void *iov_base; size_t iov_len; }                     16 bytes
 *   struct msghdr  { void *msg_name; socklen_t msg_namelen; (pad 4)
 *                    struct iovec *msg_iov; size_t msg_iovlen;
 *                    void *msg_control; size_t msg_controllen; int msg_flags; (pad 4) }   56 bytes
 *   struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; unsigned char data[]; } 16-byte header
 *   CMSG_ALIGN(n) = (n + sizeof(size_t) - 1) & ~(sizeof(size_t) - 1)  (8 on both)
 *   CMSG_LEN(n)   = CMSG_ALIGN(sizeof(cmsghdr)) + n = 16 + n
 *   CMSG_SPACE(n) = 16 + CMSG_ALIGN(n)
 *   struct sockaddr_un { sa_family_t sun_family (u16); char sun_path[108]; }  110 bytes
 *   struct ucred { pid_t pid; uid_t uid; gid_t gid; }                          12 bytes
 *   struct pollfd { int fd; short events; short revents; }                     8 bytes
 *
 * All message memory is allocated natively (koffi.alloc) so that pointers inside msghdr
 * stay valid while the kernel (or a koffi worker thread, for async calls) uses them.
 */
import { libc, koffi, closeQuiet } from './libc.js';
import { SyscallError } from './errors.js';

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const SO_PEERCRED = 17;
/** SO_RCVTIMEO_OLD / SO_SNDTIMEO_OLD (struct timeval with 64-bit fields on LP64) */
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
/** Linux 6.5+: a pidfd for the peer as it was at connect() time (no pid-reuse race). */
export const SO_PEERPIDFD = 77;
export const MSG_CTRUNC = 0x8;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SHUT_RDWR = 2;

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

/** Linux SCM_MAX_FD: at most this many descriptors in one SCM_RIGHTS message. */
export const SCM_MAX_FD = 253;

const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

if (process.arch !== 'x64' && process.arch !== 'arm64') {
  throw new Error(`src/sys/socket.ts: struct layouts are only verified for x64 and arm64, not ${process.arch}`);
}

const SIZEOF_CMSGHDR = 16;
const SIZEOF_MSGHDR = 56;
const SIZEOF_IOVEC = 16;
const SUN_PATH_MAX = 108;

export function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}
export function cmsgLen(n: number): number {
  return cmsgAlign(SIZEOF_CMSGHDR) + n;
}
export function cmsgSpace(n: number): number {
  return cmsgAlign(SIZEOF_CMSGHDR) + cmsgAlign(n);
}

// --- raw bindings (none variadic, so all may be called with .async) ---
const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_socketpair = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
const c_bind = libc.func('int bind(int fd, void *addr, uint32_t len)');
const c_connect = libc.func('int connect(int fd, void *addr, uint32_t len)');
const c_listen = libc.func('int listen(int fd, int backlog)');
const c_accept4 = libc.func('int accept4(int fd, void *addr, void *len, int flags)');
const c_sendmsg = libc.func('intptr_t sendmsg(int fd, void *msg, int flags)');
const c_recvmsg = libc.func('intptr_t recvmsg(int fd, void *msg, int flags)');
const c_getsockopt = libc.func('int getsockopt(int fd, int level, int name, void *val, void *len)');
const c_setsockopt = libc.func('int setsockopt(int fd, int level, int name, void *val, uint32_t len)');
const c_shutdown = libc.func('int shutdown(int fd, int how)');
const c_poll = libc.func('int poll(void *fds, unsigned long nfds, int timeout)');
const c_eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
const c_write = libc.func('intptr_t write(int fd, void *buf, size_t len)');
const c_read = libc.func('intptr_t read(int fd, void *buf, size_t len)');

/** A block of native memory with a Buffer view over it; free() it when done. */
class NativeBlock {
  readonly ptr: unknown;
  readonly addr: bigint;
  readonly buf: Buffer;
  constructor(size: number) {
    this.ptr = koffi.alloc('uint8_t', Math.max(size, 8));
    this.addr = koffi.address(this.ptr);
    this.buf = Buffer.from(koffi.view(this.ptr, Math.max(size, 8)));
    this.buf.fill(0);
  }
  free(): void {
    koffi.free(this.ptr);
  }
}

function fail(syscall: string, detail: Record<string, unknown>): never {
  throw new SyscallError(syscall, koffi.errno(), detail);
}

function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path, 'utf8');
  if (p.length === 0 || p.length >= SUN_PATH_MAX) {
    throw new SyscallError('sockaddr_un', 36 /* ENAMETOOLONG */, { path }, `unix socket path must be 1..${SUN_PATH_MAX - 1} bytes: ${path}`);
  }
  const b = Buffer.alloc(2 + SUN_PATH_MAX);
  b.writeUInt16LE(AF_UNIX, 0);
  p.copy(b, 2);
  return b;
}

/** socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC [| SOCK_NONBLOCK], 0) */
export function seqpacketSocket(opts: { nonblocking?: boolean } = {}): number {
  const fd = c_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (opts.nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd === -1) fail('socket', {});
  return fd;
}

/** socketpair(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC): for tests and in-process plumbing. */
export function seqpacketPair(): [number, number] {
  const sv = [0, 0];
  if (c_socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) === -1) fail('socketpair', {});
  return [sv[0]!, sv[1]!];
}

export function bindUnix(fd: number, path: string): void {
  const a = sockaddrUn(path);
  if (c_bind(fd, a, a.length) === -1) fail('bind', { fd, path });
}

export function listen(fd: number, backlog = 64): void {
  if (c_listen(fd, backlog) === -1) fail('listen', { fd });
}

/**
 * accept4 with SOCK_CLOEXEC (plus SOCK_NONBLOCK when asked). Returns null when a
 * non-blocking listener has nothing pending (EAGAIN), or the peer went away before we
 * accepted it (ECONNABORTED).
 */
export function accept4(fd: number, opts: { nonblocking?: boolean } = {}): number | null {
  const r = c_accept4(fd, null, null, SOCK_CLOEXEC | (opts.nonblocking ? SOCK_NONBLOCK : 0));
  if (r === -1) {
    const e = koffi.errno();
    if (e === 11 || e === 103 /* ECONNABORTED */ || e === 4 /* EINTR */) return null;
    fail('accept4', { fd });
  }
  return r;
}

export function connectUnix(fd: number, path: string): void {
  const a = sockaddrUn(path);
  if (c_connect(fd, a, a.length) === -1) fail('connect', { fd, path });
}

export function shutdown(fd: number, how = SHUT_RDWR): void {
  c_shutdown(fd, how);
}

export interface PeerCred {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** getsockopt(SO_PEERCRED): the peer's credentials as they were at connect() time. */
export function peerCred(fd: number): PeerCred {
  const b = Buffer.alloc(12);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(12);
  if (c_getsockopt(fd, SOL_SOCKET, SO_PEERCRED, b, len) === -1) fail('getsockopt(SO_PEERCRED)', { fd });
  return { pid: b.readInt32LE(0), uid: b.readUInt32LE(4), gid: b.readUInt32LE(8) };
}

/**
 * getsockopt(SO_PEERPIDFD) (Linux 6.5+): a pidfd on the peer process taken at connect(),
 * which cannot be confused with a later process that reuses the pid. Returns null on
 * kernels without it (ENOPROTOOPT); callers then fall back to pidfd_open(pid) + liveness checks.
 */
export function peerPidfd(fd: number): number | null {
  const b = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  if (c_getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, b, len) === -1) {
    const e = koffi.errno();
    if (e === 92 /* ENOPROTOOPT */) return null;
    fail('getsockopt(SO_PEERPIDFD)', { fd });
  }
  return b.readInt32LE(0);
}

function timeval(ms: number): Buffer {
  const b = Buffer.alloc(16);
  const t = Math.max(0, Math.floor(ms));
  b.writeBigInt64LE(BigInt(Math.floor(t / 1000)), 0);
  b.writeBigInt64LE(BigInt((t % 1000) * 1000), 8);
  return b;
}

/** SO_RCVTIMEO / SO_SNDTIMEO: blocking recvmsg/sendmsg fail with EAGAIN after `ms` (0 = never). */
export function setTimeouts(fd: number, ms: number): void {
  const tv = timeval(ms);
  if (c_setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) === -1) fail('setsockopt(SO_RCVTIMEO)', { fd });
  if (c_setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, 16) === -1) fail('setsockopt(SO_SNDTIMEO)', { fd });
}

/** Layout one msghdr + iovec + data + control area in a single native block. */
function layoutMessage(dataLen: number, controlLen: number): { block: NativeBlock; dataOff: number; ctrlOff: number } {
  const iovOff = SIZEOF_MSGHDR;
  const dataOff = iovOff + SIZEOF_IOVEC;
  const ctrlOff = dataOff + cmsgAlign(Math.max(dataLen, 1));
  const block = new NativeBlock(ctrlOff + controlLen);
  const b = block.buf;
  // msghdr
  b.writeBigUInt64LE(0n, 0); // msg_name
  b.writeUInt32LE(0, 8); // msg_namelen
  b.writeBigUInt64LE(block.addr + BigInt(iovOff), 16); // msg_iov
  b.writeBigUInt64LE(1n, 24); // msg_iovlen
  b.writeBigUInt64LE(controlLen > 0 ? block.addr + BigInt(ctrlOff) : 0n, 32); // msg_control
  b.writeBigUInt64LE(BigInt(controlLen), 40); // msg_controllen
  b.writeInt32LE(0, 48); // msg_flags
  // iovec
  b.writeBigUInt64LE(block.addr + BigInt(dataOff), iovOff);
  b.writeBigUInt64LE(BigInt(dataLen), iovOff + 8);
  return { block, dataOff, ctrlOff };
}

/**
 * sendmsg with an optional SCM_RIGHTS control message (at most SCM_MAX_FD fds).
 * MSG_NOSIGNAL is always set (a vanished peer gives EPIPE, not SIGPIPE).
 * Returns the bytes sent, or null when a non-blocking socket would block (EAGAIN).
 */
export function sendMessage(fd: number, data: Uint8Array, fds: readonly number[] = [], flags = 0): number | null {
  if (fds.length > SCM_MAX_FD) throw new RangeError(`at most ${SCM_MAX_FD} fds per message (got ${fds.length})`);
  const ctrlLen = fds.length > 0 ? cmsgSpace(4 * fds.length) : 0;
  const { block, dataOff, ctrlOff } = layoutMessage(data.length, ctrlLen);
  try {
    Buffer.from(data.buffer, data.byteOffset, data.length).copy(block.buf, dataOff);
    if (fds.length > 0) {
      block.buf.writeBigUInt64LE(BigInt(cmsgLen(4 * fds.length)), ctrlOff); // cmsg_len
      block.buf.writeInt32LE(SOL_SOCKET, ctrlOff + 8);
      block.buf.writeInt32LE(SCM_RIGHTS, ctrlOff + 12);
      fds.forEach((f, i) => block.buf.writeInt32LE(f, ctrlOff + SIZEOF_CMSGHDR + 4 * i));
    }
    const r = Number(c_sendmsg(fd, block.ptr, flags | MSG_NOSIGNAL));
    if (r === -1) {
      const e = koffi.errno();
      if (e === 11) return null;
      fail('sendmsg', { fd, bytes: data.length, fds: fds.length });
    }
    return r;
  } finally {
    block.free();
  }
}

export interface ReceivedMessage {
  readonly data: Buffer;
  /** descriptors received (already CLOEXEC); empty when the message was truncated (they were closed) */
  readonly fds: number[];
  /** the peer closed the connection (recvmsg returned 0 with no data) */
  readonly eof: boolean;
  /** MSG_TRUNC: the datagram was longer than maxBytes (the rest is lost) */
  readonly truncated: boolean;
  /** MSG_CTRUNC: some descriptors did not fit and were dropped by the kernel */
  readonly controlTruncated: boolean;
  /** descriptors that arrived but were closed here because the message was truncated or fds were not wanted */
  readonly closedFds: number;
}

/**
 * recvmsg with room for `maxBytes` of data and `maxFds` descriptors; MSG_CMSG_CLOEXEC is
 * always set so no received descriptor can leak through an exec before it is placed.
 * When the data or the control area was truncated, every descriptor that did arrive is
 * closed (a partial message is never acted upon). Returns null on EAGAIN (non-blocking
 * socket or SO_RCVTIMEO expiry).
 */
export function recvMessage(fd: number, maxBytes: number, maxFds: number, flags = 0): ReceivedMessage | null {
  // Room for at least one fd even when none is expected, so that unexpected fds are seen (and closed)
  // instead of being silently discarded with only MSG_CTRUNC to tell.
  const ctrlLen = cmsgSpace(4 * Math.max(1, Math.min(maxFds, SCM_MAX_FD)));
  const { block, dataOff, ctrlOff } = layoutMessage(maxBytes, ctrlLen);
  try {
    const n = Number(c_recvmsg(fd, block.ptr, flags | MSG_CMSG_CLOEXEC));
    if (n === -1) {
      const e = koffi.errno();
      if (e === 11 || e === 4) return null;
      fail('recvmsg', { fd });
    }
    const b = block.buf;
    const msgFlags = b.readInt32LE(48);
    const gotCtrl = Number(b.readBigUInt64LE(40));
    const fds: number[] = [];
    let off = 0;
    while (off + SIZEOF_CMSGHDR <= gotCtrl) {
      const len = Number(b.readBigUInt64LE(ctrlOff + off));
      if (len < SIZEOF_CMSGHDR || off + len > gotCtrl) break;
      const level = b.readInt32LE(ctrlOff + off + 8);
      const type = b.readInt32LE(ctrlOff + off + 12);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        const count = Math.floor((len - SIZEOF_CMSGHDR) / 4);
        for (let i = 0; i < count; i++) fds.push(b.readInt32LE(ctrlOff + off + SIZEOF_CMSGHDR + 4 * i));
      }
      off += cmsgAlign(len);
    }
    const truncated = (msgFlags & MSG_TRUNC) !== 0;
    const controlTruncated = (msgFlags & MSG_CTRUNC) !== 0;
    let closedFds = 0;
    let kept = fds;
    if (truncated || controlTruncated || fds.length > maxFds) {
      for (const f of fds) closeQuiet(f);
      closedFds = fds.length;
      kept = [];
    }
    const data = Buffer.from(b.subarray(dataOff, dataOff + Math.min(n, maxBytes)));
    return { data, fds: kept, eof: n === 0 && fds.length === 0, truncated, controlTruncated, closedFds };
  } finally {
    block.free();
  }
}

export interface PollRequest {
  readonly fd: number;
  readonly events: number;
}

function pollBlock(reqs: readonly PollRequest[]): NativeBlock {
  const block = new NativeBlock(8 * reqs.length);
  reqs.forEach((r, i) => {
    block.buf.writeInt32LE(r.fd, 8 * i);
    block.buf.writeInt16LE(r.events, 8 * i + 4);
  });
  return block;
}
function pollResult(block: NativeBlock, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(block.buf.readInt16LE(8 * i + 6));
  return out;
}

/** poll(2), blocking the calling thread up to timeoutMs (-1 = forever). Returns revents per request. */
export function poll(reqs: readonly PollRequest[], timeoutMs: number): number[] {
  const block = pollBlock(reqs);
  try {
    const r = c_poll(block.ptr, reqs.length, Math.trunc(timeoutMs));
    if (r === -1) {
      if (koffi.errno() === 4) return reqs.map(() => 0);
      fail('poll', { nfds: reqs.length });
    }
    return pollResult(block, reqs.length);
  } finally {
    block.free();
  }
}

/**
 * poll(2) on a koffi worker thread (libuv's pool), so Node's event loop keeps running
 * while we wait. Include an eventfd (see Waker) to interrupt the wait early.
 */
export function pollAsync(reqs: readonly PollRequest[], timeoutMs: number): Promise<number[]> {
  const block = pollBlock(reqs);
  return new Promise((resolve, reject) => {
    c_poll.async(block.ptr, reqs.length, Math.trunc(timeoutMs), (err: unknown, r: number) => {
      try {
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        // errno of a worker-thread call is not reliably visible here; EINTR is the only expected failure
        else if (r === -1) resolve(reqs.map(() => 0));
        else resolve(pollResult(block, reqs.length));
      } finally {
        block.free();
      }
    });
  });
}

/** An eventfd used to wake a pollAsync wait from the main thread. */
export class Waker {
  readonly fd: number;
  constructor() {
    const fd = c_eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd === -1) fail('eventfd', {});
    this.fd = fd;
  }
  wake(): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(1n);
    c_write(this.fd, b, 8);
  }
  drain(): void {
    const b = Buffer.alloc(8);
    c_read(this.fd, b, 8);
  }
  close(): void {
    closeQuiet(this.fd);
  }
}
