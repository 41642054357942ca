/**
 * The receiving side of a handover, used by the restore shim. The shim does nothing else
 * while it waits, so this side blocks (poll with the remaining time before each step);
 * it is still exposed as a Promise so callers can treat it like any other async step.
 *
 *   const got = await receiveHandover('/run/lockmig/vault.sock', 'ns/name', 10_000);
 *   // got: Map<fileId, fd> (fds are close-on-exec, at whatever numbers the kernel chose)
 *   await got.confirm();      // the vault closes its copies: this process alone holds the locks
 *   ... restore, then right before execve:
 *   got.reportHeld(posixTimings);  // optional; tells the vault when every lock was held
 *
 * On any failure before confirm() every received fd is closed again (the vault keeps its
 * copies, so the locks stay held and a retry works).
 */
import { closeQuiet } from '../sys/libc.js';
import {
  seqpacketSocket, connectUnix, sendMessage, recvMessage, poll, POLLIN, POLLOUT, MSG_DONTWAIT,
} from '../sys/socket.js';
import { SyscallError } from '../sys/errors.js';
import {
  MAX_REPLY_BYTES, FDS_PER_CHUNK, encode, parseVaultMessage, isViolation, validCheckpointName,
  type RefusalCode, type VaultMessage, type PosixTiming,
} from './protocol.js';

export class HandoverRefused extends Error {
  readonly code: RefusalCode;
  constructor(code: RefusalCode, message: string) {
    super(`vault refused the handover (${code}): ${message}`);
    this.name = 'HandoverRefused';
    this.code = code;
  }
}

export class HandoverFailed extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HandoverFailed';
  }
}

class Channel {
  constructor(readonly fd: number, readonly deadline: number) {}

  private wait(events: number, what: string): void {
    const left = this.deadline - Date.now();
    if (left <= 0) throw new HandoverFailed(`timed out waiting for the vault (${what})`);
    const [r] = poll([{ fd: this.fd, events }], left);
    if (!r) throw new HandoverFailed(`timed out waiting for the vault (${what})`);
  }

  send(data: Buffer): void {
    for (;;) {
      const n = sendMessage(this.fd, data, [], MSG_DONTWAIT);
      if (n !== null) return;
      this.wait(POLLOUT, 'send');
    }
  }

  recv(what: string, maxFds: number): { msg: VaultMessage; fds: number[] } {
    for (;;) {
      const m = recvMessage(this.fd, MAX_REPLY_BYTES, maxFds, MSG_DONTWAIT);
      if (m === null) {
        this.wait(POLLIN, what);
        continue;
      }
      if (m.eof) throw new HandoverFailed(`the vault closed the connection (waiting for ${what})`);
      if (m.truncated || m.controlTruncated) {
        throw new HandoverFailed(`message from the vault was truncated (${what}); ${m.closedFds} fd(s) dropped`);
      }
      const msg = parseVaultMessage(m.data);
      if (isViolation(msg)) {
        for (const f of m.fds) closeQuiet(f);
        throw new HandoverFailed(`bad message from the vault (${what}): ${msg.message}`);
      }
      if (msg.op === 'refused') {
        for (const f of m.fds) closeQuiet(f);
        throw new HandoverRefused(msg.code, msg.message);
      }
      return { msg, fds: m.fds };
    }
  }
}

/** The received descriptors (fileId → fd) plus the rest of the conversation with the vault. */
export class ReceivedHandover extends Map<number, number> {
  readonly checkpoint: string;
  readonly fingerprint: string;
  private readonly chan: Channel;
  private confirmed = false;
  private closed = false;
  private disowned = false;

  constructor(checkpoint: string, fingerprint: string, chan: Channel) {
    super();
    this.checkpoint = checkpoint;
    this.fingerprint = fingerprint;
    this.chan = chan;
  }

  /**
   * Ownership of the fds passed on (e.g. to restoreLocks, which closes them itself on
   * failure): close() will no longer close them.
   */
  disown(): void {
    this.disowned = true;
  }

  /** Tell the vault the descriptors are placed and POSIX waits are queued: the source may stop now. */
  ready(queuedPosix: number): void {
    const ch = new Channel(this.chan.fd, Date.now() + 10_000);
    ch.send(encode({ v: 1, op: 'ready', checkpoint: this.checkpoint, queuedPosix }));
  }

  /**
   * Tell the vault we hold every descriptor; resolves once it has closed its copies.
   * From then on this process alone keeps the OFD/flock locks alive.
   */
  async confirm(timeoutMs = 10_000): Promise<void> {
    if (this.confirmed) return;
    const ch = new Channel(this.chan.fd, Date.now() + timeoutMs);
    ch.send(encode({ v: 1, op: 'confirm', checkpoint: this.checkpoint, fileIds: [...this.keys()] }));
    const { msg, fds } = ch.recv('confirmation', 0);
    for (const f of fds) closeQuiet(f);
    if (msg.op !== 'confirmed') throw new HandoverFailed(`expected "confirmed" from the vault, got "${msg.op}"`);
    this.confirmed = true;
  }

  /** Optional: report, right before execve, that every lock is held (with POSIX timings). */
  reportHeld(posix: readonly PosixTiming[], heldNs: bigint = process.hrtime.bigint()): void {
    if (!this.confirmed || this.closed) return;
    try {
      sendMessage(this.chan.fd, encode({ v: 1, op: 'held', checkpoint: this.checkpoint, heldNs: heldNs.toString(), posix }), [], MSG_DONTWAIT);
    } catch {
      // best effort: the vault only uses it for reporting
    }
  }

  /** Hang up. Before confirm() this also closes every received fd (the vault still holds them). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.confirmed && !this.disowned) for (const fd of this.values()) closeQuiet(fd);
    closeQuiet(this.chan.fd);
  }
}

/**
 * Connect to the vault at `socketPath` and receive the descriptors of `checkpoint`.
 * Retries the connect until the vault's socket exists (the shim may start first).
 * Throws HandoverRefused (with the vault's reason) or HandoverFailed.
 */
export async function receiveHandover(socketPath: string, checkpoint: string, timeoutMs: number): Promise<ReceivedHandover> {
  if (!validCheckpointName(checkpoint)) throw new HandoverFailed(`invalid checkpoint name ${JSON.stringify(checkpoint)}`);
  const deadline = Date.now() + timeoutMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    try {
      return await attempt(socketPath, checkpoint, deadline);
    } catch (err) {
      // "not-ready" (the vault does not know its target yet) and "busy" are worth a retry
      const retry = err instanceof HandoverRefused && (err.code === 'not-ready' || err.code === 'busy');
      if (!retry || Date.now() + delay >= deadline) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

async function attempt(socketPath: string, checkpoint: string, deadline: number): Promise<ReceivedHandover> {
  let fd = -1;
  for (;;) {
    fd = seqpacketSocket();
    try {
      connectUnix(fd, socketPath);
      break;
    } catch (err) {
      closeQuiet(fd);
      const retry = err instanceof SyscallError && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'EAGAIN');
      if (!retry || Date.now() >= deadline) {
        throw new HandoverFailed(`cannot connect to the vault at ${socketPath}: ${(err as Error).message}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const chan = new Channel(fd, deadline);
  let got: ReceivedHandover;
  let offer: Extract<VaultMessage, { op: 'offer' }>;
  try {
    chan.send(encode({ v: 1, op: 'receive', checkpoint }));
    const { msg, fds: stray } = chan.recv('offer', 0);
    for (const f of stray) closeQuiet(f);
    if (msg.op !== 'offer' || msg.checkpoint !== checkpoint) throw new HandoverFailed(`expected an offer for ${checkpoint} from the vault`);
    offer = msg;
    got = new ReceivedHandover(checkpoint, offer.fingerprint, chan);
  } catch (err) {
    closeQuiet(fd);
    throw err;
  }
  try {
    for (let seq = 0; seq < offer.chunks; seq++) {
      const { msg, fds } = chan.recv(`descriptors ${seq + 1}/${offer.chunks}`, FDS_PER_CHUNK);
      const ok = msg.op === 'fds' && msg.seq === seq && msg.fileIds.length === fds.length && msg.fileIds.every((id) => !got.has(id));
      if (!ok) {
        for (const f of fds) closeQuiet(f);
        throw new HandoverFailed(`malformed descriptor message ${seq} from the vault`);
      }
      msg.fileIds.forEach((id, i) => got.set(id, fds[i]!));
    }
    if (got.size !== offer.total) throw new HandoverFailed(`the vault offered ${offer.total} descriptors but sent ${got.size}`);
    return got;
  } catch (err) {
    got.close();
    throw err;
  }
}
