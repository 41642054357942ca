/**
 * The handover vault: holds open file descriptions taken from a source (so their OFD and
 * flock locks stay held while the source is stopped), keyed by checkpoint name, and hands
 * them to exactly one authenticated receiver over a unix SOCK_SEQPACKET socket.
 *
 * Event loop: every socket is non-blocking; one poll(2) runs on a koffi worker thread
 * (pollAsync) over the listener, the live connections and an eventfd that wakes it when
 * the vault's state changes. All protocol handling happens on the main thread between
 * polls, so Node's event loop is never blocked and no fd is closed while the kernel polls it.
 *
 * Guarantees:
 * - the vault closes its copies only after the receiver confirmed it has every fd;
 * - one receiver, once: a second (or replayed) request is refused; a receiver that hangs
 *   up before confirming puts the entry back to "held", so a retry works;
 * - malformed, oversized or truncated requests, requests carrying fds, peers outside the
 *   target: refused with a reason, logged as structured JSON with the peer's pid/uid,
 *   and the vault keeps serving;
 * - a target that never comes: released after `releaseAfterMs` (or held forever with `hold`);
 * - a vault restart loses the held descriptions (they live only in this process): with
 *   `stateFile`, the next vault emits a "lost" event listing what the previous one held.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Checkpoint } from '../image/model.js';
import { quietLog, type Log } from '../log/lite.js';
import { closeQuiet } from '../sys/libc.js';
import { SyscallError } from '../sys/errors.js';
import {
  seqpacketSocket, bindUnix, listen, accept4, connectUnix, sendMessage, recvMessage, pollAsync, Waker,
  POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL,
} from '../sys/socket.js';
import {
  MAX_REQUEST_BYTES, encode, parseClientMessage, isViolation, chunkIds, confirmMatches, validCheckpointName,
  type RefusalCode, type VaultMessage, type HeldReport,
} from './protocol.js';
import { identifyPeer, PeerIdentityError, type TargetMatcher, type PeerIdentity } from './auth.js';
import { takeOverDescriptions, planTakeover, type TakeoverPlan } from './takeover.js';

export type EntryState = 'held' | 'sending' | 'delivered' | 'released';

export interface DepositOptions {
  /**
   * who may receive; omit when the target is not known yet (e.g. the restore pod's UID is
   * learnt later): receivers are then told "not-ready" and retry until setTarget() is called
   */
  readonly matcher?: TargetMatcher;
  /** release (close) the descriptions if nobody has received them after this long; ignored with hold */
  readonly releaseAfterMs?: number;
  /** keep holding until received or explicitly released */
  readonly hold?: boolean;
}

export interface PeerInfo { readonly pid: number; readonly uid: number; readonly gid: number }

export interface VaultEvents {
  refused: [{ checkpoint?: string; code: RefusalCode; message: string; peer?: PeerInfo }];
  /** the receiver placed the descriptors and queued its POSIX waits: the source may be stopped */
  ready: [{ checkpoint: string; queuedPosix: number; peer: PeerInfo }];
  delivered: [{ checkpoint: string; files: number; peer: PeerInfo }];
  held: [{ checkpoint: string; report: HeldReport; peer: PeerInfo; receivedAtNs: bigint }];
  released: [{ checkpoint: string; reason: 'timeout' | 'cancelled' | 'vault-closed'; files: number }];
  aborted: [{ checkpoint: string; reason: string; peer: PeerInfo }];
  /** a previous vault process held these and died: their locks were released by the kernel */
  lost: [{ checkpoints: { name: string; since: string; files: number }[]; previousPid: number; reason: 'vault-restarted' }];
}

export interface VaultOptions {
  readonly socketPath: string;
  /** file mode of the socket; the default lets any uid connect (authentication is by cgroup) */
  readonly socketMode?: number;
  /** a winston Logger or jsonLogger() */
  readonly logger?: Log;
  /** where the vault notes what it holds, to report losses after a restart */
  readonly stateFile?: string;
  /** a connection must finish each step within this long (default 30 s) */
  readonly connectionTimeoutMs?: number;
  readonly maxConnections?: number;
}

interface Entry {
  readonly name: string;
  readonly ckpt: Checkpoint;
  readonly plan: TakeoverPlan;
  readonly fds: Map<number, number>;
  matcher: TargetMatcher | undefined;
  readonly since: string;
  readonly fingerprint: string;
  state: EntryState;
  timer?: NodeJS.Timeout;
}

/** request → (offer sent) confirm → (ready: no deadline any more) → report → closing */
type ConnState = 'request' | 'confirm' | 'report' | 'closing';

interface Conn {
  readonly fd: number;
  state: ConnState;
  deadline: number;
  /** the receiver said "ready": it may now wait as long as the source takes to stop */
  ready?: boolean;
  out: { data: Buffer; fds: number[] }[];
  entry?: Entry;
  sent?: number[];
  peer?: PeerInfo;
  identity?: PeerIdentity;
}

export interface EntryStatus {
  readonly name: string;
  readonly state: EntryState;
  readonly files: number;
  readonly since: string;
  readonly target: string;
}

export function checkpointFingerprint(ckpt: Checkpoint): string {
  return `${ckpt.createdAt}/${ckpt.source.rootPid}`;
}

export class Vault extends EventEmitter<VaultEvents> {
  readonly socketPath: string;
  private readonly log: Log;
  private readonly opts: VaultOptions;
  private readonly entries = new Map<string, Entry>();
  private readonly conns = new Map<number, Conn>();
  private listenFd = -1;
  private waker: Waker | null = null;
  private loopDone: Promise<void> | null = null;
  private closing = false;

  constructor(opts: VaultOptions) {
    super();
    this.opts = opts;
    this.socketPath = opts.socketPath;
    this.log = opts.logger ?? quietLog;
  }

  /** Bind the socket and start serving. Emits "lost" first if a previous vault died holding locks. */
  start(): void {
    if (this.listenFd >= 0) throw new Error('vault already started');
    this.reportPreviousLosses();
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o755 });
    let st: fs.Stats | null = null;
    try { st = fs.lstatSync(this.socketPath); } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; }
    if (st && !st.isSocket()) throw new Error(`refusing to replace ${this.socketPath}: it exists and is not a socket`);
    if (st) {
      // a live vault answers connect(); only a stale socket file (ECONNREFUSED) is replaced
      const probe = seqpacketSocket();
      try {
        connectUnix(probe, this.socketPath);
        throw new Error(`another vault is serving ${this.socketPath}`);
      } catch (err) {
        if (!(err instanceof SyscallError) || err.code !== 'ECONNREFUSED') throw err;
      } finally {
        closeQuiet(probe);
      }
      fs.unlinkSync(this.socketPath);
    }
    const fd = seqpacketSocket({ nonblocking: true });
    try {
      bindUnix(fd, this.socketPath);
      fs.chmodSync(this.socketPath, this.opts.socketMode ?? 0o666);
      listen(fd, 128);
    } catch (err) {
      closeQuiet(fd);
      throw err;
    }
    this.listenFd = fd;
    this.waker = new Waker();
    this.writeState();
    this.loopDone = this.loop().catch((err: unknown) => {
      this.log.error('vault loop failed', { event: 'vault-failed', error: (err as Error).message });
    });
    this.log.info('vault serving', { event: 'vault-started', socket: this.socketPath });
  }

  /** Take over the descriptions of a running source (pidfd_getfd) and hold them under `name`. */
  takeOver(name: string, ckpt: Checkpoint, opts: DepositOptions): TakeoverPlan {
    this.checkNewName(name);
    const fds = takeOverDescriptions(ckpt);
    return this.deposit(name, ckpt, fds, opts);
  }

  /** Hold already-taken descriptions (fileId → fd; the vault owns and closes them). */
  deposit(name: string, ckpt: Checkpoint, fds: Map<number, number>, opts: DepositOptions): TakeoverPlan {
    this.checkNewName(name);
    const plan = planTakeover(ckpt);
    const entry: Entry = {
      name, ckpt, plan, fds, matcher: opts.matcher, since: new Date().toISOString(),
      fingerprint: checkpointFingerprint(ckpt), state: 'held',
    };
    if (!opts.hold && opts.releaseAfterMs !== undefined) {
      entry.timer = setTimeout(() => this.onReleaseTimer(entry), opts.releaseAfterMs);
    }
    this.entries.set(name, entry);
    this.writeState();
    this.log.info('vault holds checkpoint', {
      event: 'held', checkpoint: name, files: fds.size, movedLocks: plan.moved.length, retakenLocks: plan.retaken.length,
      target: opts.matcher?.describe() ?? 'not known yet', releaseAfterMs: opts.hold ? null : opts.releaseAfterMs ?? null,
    });
    return plan;
  }

  private checkNewName(name: string): void {
    if (!validCheckpointName(name)) throw new Error(`invalid checkpoint name ${JSON.stringify(name)}`);
    const e = this.entries.get(name);
    if (e && (e.state === 'held' || e.state === 'sending')) throw new Error(`the vault already holds checkpoint ${name}`);
  }

  status(name: string): EntryStatus | undefined {
    const e = this.entries.get(name);
    return e && { name, state: e.state, files: e.fds.size, since: e.since, target: e.matcher?.describe() ?? 'not known yet' };
  }

  list(): EntryStatus[] {
    return [...this.entries.keys()].map((n) => this.status(n)!);
  }

  /** Number of descriptions the vault currently holds (over all checkpoints). */
  heldDescriptions(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.fds.size;
    return n;
  }

  /** Name (or change) the restore target of a held checkpoint. */
  setTarget(name: string, matcher: TargetMatcher): void {
    const e = this.entries.get(name);
    if (!e || (e.state !== 'held' && e.state !== 'sending')) throw new Error(`the vault holds no checkpoint ${name}`);
    e.matcher = matcher;
    this.log.info('restore target set', { event: 'target', checkpoint: name, target: matcher.describe() });
  }

  /** Close the descriptions of `name` now (the locks are released unless someone else holds them). */
  release(name: string, reason: 'timeout' | 'cancelled' | 'vault-closed' = 'cancelled'): boolean {
    const e = this.entries.get(name);
    if (!e || (e.state !== 'held' && e.state !== 'sending')) return false;
    if (e.state === 'sending') {
      for (const c of this.conns.values()) if (c.entry === e) this.dropConn(c, `released (${reason})`);
    }
    const files = e.fds.size;
    this.closeCopies(e);
    e.state = 'released';
    this.writeState();
    this.log.warn('vault released checkpoint without handing it over', { event: 'released', checkpoint: name, reason, files });
    this.emit('released', { checkpoint: name, reason, files });
    return true;
  }

  /** Stop serving; descriptions still held are closed (their locks are released) and reported. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.waker?.wake();
    await this.loopDone;
    for (const c of [...this.conns.values()]) this.dropConn(c, 'vault closing');
    for (const e of this.entries.values()) {
      if (e.state === 'held' || e.state === 'sending') this.release(e.name, 'vault-closed');
    }
    if (this.listenFd >= 0) closeQuiet(this.listenFd);
    this.listenFd = -1;
    try {
      fs.unlinkSync(this.socketPath);
    } catch { /* already gone */ }
    this.waker?.close();
    this.waker = null;
    this.writeState(true);
  }

  // --- internals ---

  private onReleaseTimer(e: Entry): void {
    e.timer = undefined;
    // A receiver still in the middle of its transfer is cut off: it gets EOF instead of "confirmed".
    if (e.state === 'held' || e.state === 'sending') this.release(e.name, 'timeout');
  }

  private closeCopies(e: Entry): void {
    if (e.timer) clearTimeout(e.timer);
    e.timer = undefined;
    for (const fd of e.fds.values()) closeQuiet(fd);
    e.fds.clear();
  }

  private async loop(): Promise<void> {
    const waker = this.waker!;
    while (!this.closing) {
      const conns = [...this.conns.values()];
      const reqs = [
        { fd: waker.fd, events: POLLIN },
        { fd: this.listenFd, events: POLLIN },
        ...conns.map((c) => ({ fd: c.fd, events: POLLIN | (c.out.length ? POLLOUT : 0) })),
      ];
      const now = Date.now();
      let timeout = 60_000;
      for (const c of conns) if (Number.isFinite(c.deadline)) timeout = Math.min(timeout, Math.max(0, c.deadline - now));
      const rev = await pollAsync(reqs, timeout);
      if (this.closing) break;
      if (rev[0]! & POLLIN) waker.drain();
      if (rev[1]! & POLLIN) this.acceptAll();
      conns.forEach((c, i) => {
        const r = rev[i + 2]!;
        if (!this.conns.has(c.fd)) return;
        try {
          if (r & POLLNVAL) return this.dropConn(c, 'invalid fd');
          if (r & POLLOUT) this.flush(c);
          if (r & (POLLIN | POLLHUP | POLLERR)) this.readFrom(c);
        } catch (err) {
          this.log.error('handover connection failed', { event: 'connection-error', error: (err as Error).message, peerPid: c.peer?.pid });
          this.dropConn(c, (err as Error).message);
        }
      });
      const t = Date.now();
      for (const c of [...this.conns.values()]) {
        if (c.deadline <= t) {
          if (c.state === 'request' || c.state === 'confirm') this.refuse(c, 'timeout', `no ${c.state} within the connection timeout`);
          else this.dropConn(c, 'idle');
        }
      }
    }
  }

  private acceptAll(): void {
    for (;;) {
      const fd = accept4(this.listenFd, { nonblocking: true });
      if (fd === null) return;
      const c: Conn = { fd, state: 'request', deadline: Date.now() + (this.opts.connectionTimeoutMs ?? 30_000), out: [] };
      this.conns.set(fd, c);
      if (this.conns.size > (this.opts.maxConnections ?? 64)) {
        this.refuse(c, 'too-many-connections', 'the vault has too many open connections; retry later');
      }
    }
  }

  private send(c: Conn, msg: VaultMessage, fds: number[] = []): void {
    c.out.push({ data: encode(msg), fds });
    this.flush(c);
    // the socket buffer is full: the poll in flight does not watch POLLOUT yet, restart it
    if (c.out.length > 0) this.waker?.wake();
  }

  private flush(c: Conn): void {
    while (c.out.length) {
      const m = c.out[0]!;
      let r: number | null;
      try {
        r = sendMessage(c.fd, m.data, m.fds, 0x40 /* MSG_DONTWAIT */);
      } catch (err) {
        // EPIPE/ECONNRESET: the peer is gone; anything not confirmed stays held.
        this.dropConn(c, (err as Error).message);
        return;
      }
      if (r === null) return; // socket buffer full: poll for POLLOUT
      c.out.shift();
    }
    if (c.state === 'closing') this.dropConn(c, 'done');
  }

  private refuse(c: Conn, code: RefusalCode, message: string, checkpoint?: string): void {
    const peer = c.peer;
    this.log.warn('handover request refused', {
      event: 'refused', code, reason: message, checkpoint, peerPid: peer?.pid, peerUid: peer?.uid, peerGid: peer?.gid,
    });
    this.emit('refused', { code, message, ...(checkpoint !== undefined ? { checkpoint } : {}), ...(peer ? { peer } : {}) });
    if (c.state === 'confirm') this.abortTransfer(c, `refused: ${code}`);
    c.state = 'closing';
    c.out = [];
    this.send(c, { v: 1, op: 'refused', code, message });
  }

  /** The receiver did not confirm: its fds (if any) die with it; the vault's copies stay held. */
  private abortTransfer(c: Conn, reason: string): void {
    const e = c.entry;
    if (!e || e.state !== 'sending') return;
    e.state = 'held';
    c.entry = undefined;
    this.log.warn('handover transfer aborted; still holding', { event: 'aborted', checkpoint: e.name, reason, peerPid: c.peer?.pid, peerUid: c.peer?.uid });
    this.emit('aborted', { checkpoint: e.name, reason, peer: c.peer ?? { pid: -1, uid: -1, gid: -1 } });
  }

  private dropConn(c: Conn, reason: string): void {
    if (!this.conns.has(c.fd)) return;
    if (c.state === 'confirm') this.abortTransfer(c, reason);
    this.conns.delete(c.fd);
    closeQuiet(c.fd);
  }

  private identify(c: Conn): PeerIdentity | null {
    try {
      const id = identifyPeer(c.fd);
      c.peer = { pid: id.pid, uid: id.uid, gid: id.gid };
      c.identity = id;
      return id;
    } catch (err) {
      if (err instanceof PeerIdentityError) {
        c.peer = { pid: err.pid, uid: err.uid, gid: -1 };
        this.refuse(c, 'not-target', err.message);
        return null;
      }
      throw err;
    }
  }

  private readFrom(c: Conn): void {
    for (;;) {
      if (!this.conns.has(c.fd) || c.state === 'closing') return;
      const m = recvMessage(c.fd, MAX_REQUEST_BYTES, 0, 0x40 /* MSG_DONTWAIT */);
      if (m === null) return;
      if (m.eof) {
        this.dropConn(c, 'peer hung up');
        return;
      }
      if (!c.peer) {
        const id = this.identify(c);
        if (!id) return;
      }
      if (m.closedFds > 0 || m.fds.length > 0) {
        for (const f of m.fds) closeQuiet(f);
        this.refuse(c, m.truncated ? 'oversized' : 'unexpected-fds', `request carried ${m.closedFds || m.fds.length} file descriptor(s); none are accepted`);
        return;
      }
      if (m.truncated) {
        this.refuse(c, 'oversized', `request longer than ${MAX_REQUEST_BYTES} bytes`);
        return;
      }
      const msg = parseClientMessage(m.data);
      if (isViolation(msg)) {
        this.refuse(c, msg.violation, msg.message);
        return;
      }
      c.deadline = c.ready ? Number.POSITIVE_INFINITY : Date.now() + (this.opts.connectionTimeoutMs ?? 30_000);
      switch (msg.op) {
        case 'receive':
          if (c.state !== 'request') return this.refuse(c, 'out-of-order', 'receive after the conversation started', msg.checkpoint);
          this.onReceive(c, msg.checkpoint);
          break;
        case 'ready':
          if (c.state !== 'confirm' || c.ready || c.entry?.name !== msg.checkpoint) {
            return this.refuse(c, 'out-of-order', 'ready without a transfer of this checkpoint on this connection', msg.checkpoint);
          }
          c.ready = true;
          c.deadline = Number.POSITIVE_INFINITY;
          this.log.info('receiver ready; the source may be stopped', { event: 'ready', checkpoint: msg.checkpoint, queuedPosix: msg.queuedPosix, peerPid: c.peer?.pid });
          this.emit('ready', { checkpoint: msg.checkpoint, queuedPosix: msg.queuedPosix, peer: c.peer! });
          break;
        case 'confirm':
          if (c.state !== 'confirm' || c.entry?.name !== msg.checkpoint) {
            return this.refuse(c, 'out-of-order', 'confirm without a transfer of this checkpoint on this connection', msg.checkpoint);
          }
          this.onConfirm(c, msg.fileIds);
          break;
        case 'held':
          if (c.state !== 'report' || c.entry?.name !== msg.checkpoint) {
            return this.refuse(c, 'out-of-order', 'held report without a confirmed transfer on this connection', msg.checkpoint);
          }
          this.emit('held', { checkpoint: msg.checkpoint, report: msg, peer: c.peer!, receivedAtNs: process.hrtime.bigint() });
          this.log.info('target reports every lock held', { event: 'target-holds', checkpoint: msg.checkpoint, peerPid: c.peer?.pid });
          this.dropConn(c, 'done');
          return;
      }
    }
  }

  private onReceive(c: Conn, name: string): void {
    const e = this.entries.get(name);
    if (!e) return this.refuse(c, 'unknown-checkpoint', `the vault holds no checkpoint named ${name}`, name);
    // Authenticate before saying anything about the entry's state.
    const id = c.identity!;
    if (e.state === 'held' && !e.matcher) return this.refuse(c, 'not-ready', `the restore target of ${name} is not known yet; retry`, name);
    if (!e.matcher) return this.refuse(c, 'unknown-checkpoint', `checkpoint ${name} is no longer held`, name);
    const verdict = e.matcher.match(id);
    if (!verdict.ok && verdict.notReady) return this.refuse(c, 'not-ready', `${verdict.reason}; retry`, name);
    if (!verdict.ok) return this.refuse(c, 'not-target', `peer pid ${id.pid} uid ${id.uid} is not the restore target (${e.matcher.describe()}): ${verdict.reason}`, name);
    if (e.state === 'delivered') return this.refuse(c, 'already-delivered', `checkpoint ${name} was handed over already; it is handed over once`, name);
    if (e.state === 'released') return this.refuse(c, 'unknown-checkpoint', `checkpoint ${name} was released; the vault no longer holds it`, name);
    if (e.state === 'sending') return this.refuse(c, 'busy', `checkpoint ${name} is being handed over on another connection`, name);
    e.state = 'sending';
    c.entry = e;
    c.state = 'confirm';
    const ids = [...e.fds.keys()];
    c.sent = ids;
    const chunks = chunkIds(ids);
    this.send(c, { v: 1, op: 'offer', checkpoint: name, fingerprint: e.fingerprint, total: ids.length, chunks: chunks.length });
    chunks.forEach((chunk, seq) => this.send(c, { v: 1, op: 'fds', seq, fileIds: chunk }, chunk.map((id) => e.fds.get(id)!)));
  }

  private onConfirm(c: Conn, fileIds: readonly number[]): void {
    const e = c.entry!;
    if (!confirmMatches(c.sent ?? [], fileIds)) {
      return this.refuse(c, 'bad-confirm', `confirmation lists ${fileIds.length} file ids, ${c.sent?.length ?? 0} were sent`, e.name);
    }
    const files = e.fds.size;
    this.closeCopies(e);
    e.state = 'delivered';
    c.state = 'report';
    this.writeState();
    this.log.info('checkpoint handed over', { event: 'delivered', checkpoint: e.name, files, peerPid: c.peer?.pid, peerUid: c.peer?.uid });
    this.emit('delivered', { checkpoint: e.name, files, peer: c.peer! });
    this.send(c, { v: 1, op: 'confirmed' });
  }

  // --- restart detection ---

  private reportPreviousLosses(): void {
    const f = this.opts.stateFile;
    if (!f) return;
    let prev: { pid?: number; entries?: { name: string; since: string; files: number }[] };
    try {
      prev = JSON.parse(fs.readFileSync(f, 'utf8')) as typeof prev;
    } catch {
      return; // no previous state (or unreadable): nothing to report
    }
    const lost = (prev.entries ?? []).filter((x) => typeof x?.name === 'string');
    if (lost.length === 0) return;
    this.log.error('a previous vault died holding checkpoints; their OFD/flock locks were released', {
      event: 'lost', previousPid: prev.pid, checkpoints: lost.map((l) => l.name),
    });
    // Emit after start() returns so listeners attached right after start() see it, too.
    queueMicrotask(() => this.emit('lost', { checkpoints: lost, previousPid: prev.pid ?? -1, reason: 'vault-restarted' }));
  }

  private writeState(final = false): void {
    const f = this.opts.stateFile;
    if (!f) return;
    const entries = final ? [] : [...this.entries.values()]
      .filter((e) => e.state === 'held' || e.state === 'sending')
      .map((e) => ({ name: e.name, since: e.since, files: e.fds.size }));
    const tmp = `${f}.${process.pid}.tmp`;
    fs.mkdirSync(path.dirname(f), { recursive: true });
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify({ pid: process.pid, socket: this.socketPath, entries }));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, f);
  }
}
