/**
 * The handover wire protocol: versioned JSON messages, one per SOCK_SEQPACKET datagram
 * (message boundaries are kept by the kernel, so a message is never split or merged).
 *
 *   shim  → vault   {"v":1,"op":"receive","checkpoint":"<name>"}                       (no fds)
 *   vault → shim    {"v":1,"op":"refused","code":"…","message":"…"}                     then the vault hangs up
 *               or  {"v":1,"op":"offer","checkpoint":"…","fingerprint":"…","total":N,"chunks":K}
 *   vault → shim    K × {"v":1,"op":"fds","seq":i,"fileIds":[…]}  + SCM_RIGHTS, one fd per fileId, same order
 *   shim  → vault   {"v":1,"op":"ready","checkpoint":"…","queuedPosix":n}   optional: fds placed, POSIX waits queued
 *                   (the source may be stopped now; the shim confirms once it holds every lock)
 *   shim  → vault   {"v":1,"op":"confirm","checkpoint":"…","fileIds":[… every fileId received …]}
 *   vault → shim    {"v":1,"op":"confirmed"}            (the vault has closed its copies)
 *   shim  → vault   {"v":1,"op":"held", …timings…}       optional, once the shim holds every lock
 *
 * Requests are at most MAX_REQUEST_BYTES; anything longer arrives with MSG_TRUNC and is refused.
 * Parsing is a pure function that either returns a typed message or a ProtocolViolation
 * naming what is wrong; it never throws on hostile input.
 */

export const PROTOCOL_VERSION = 1;
/** Longest request the vault accepts (a request is a few dozen bytes; "held" reports carry timings). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Longest vault→shim message (an fds chunk lists up to SCM_MAX_FD ids). */
export const MAX_REPLY_BYTES = 64 * 1024;
/** Descriptors per "fds" message (below the kernel's SCM_MAX_FD = 253). */
export const FDS_PER_CHUNK = 250;
/** Checkpoint names: Kubernetes object names with an optional "namespace/" prefix. */
const NAME_RE = /^(?:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,251}[a-zA-Z0-9])?$/;

export type RefusalCode =
  | 'malformed' // not JSON, wrong shape, unknown op
  | 'version' // protocol version we do not speak
  | 'oversized' // longer than MAX_REQUEST_BYTES (truncated by the kernel)
  | 'unexpected-fds' // a request carrying descriptors
  | 'unknown-checkpoint' // the vault holds nothing under this name
  | 'not-target' // the peer is not the restore target named by the checkpoint
  | 'already-delivered' // one receiver, once: the descriptors were handed over already
  | 'not-ready' // the vault does not know the restore target yet: retry (the only retryable refusal besides busy)
  | 'busy' // another receiver is in the middle of this checkpoint's transfer
  | 'bad-confirm' // the confirmation does not list exactly what was sent
  | 'out-of-order' // a message that does not fit the conversation so far
  | 'too-many-connections'
  | 'timeout';

export interface ReceiveRequest { readonly v: 1; readonly op: 'receive'; readonly checkpoint: string }
export interface ReadyNotice { readonly v: 1; readonly op: 'ready'; readonly checkpoint: string; readonly queuedPosix: number }
export interface ConfirmRequest { readonly v: 1; readonly op: 'confirm'; readonly checkpoint: string; readonly fileIds: readonly number[] }
export interface PosixTiming {
  readonly fileId: number;
  readonly start: string;
  readonly end: string;
  /** CLOCK_MONOTONIC ns (process.hrtime.bigint()) when the shim's F_SETLKW returned */
  readonly acquiredNs: string;
  /** true when F_SETLKW was queued in the kernel before the source stopped */
  readonly queued: boolean;
}
export interface HeldReport {
  readonly v: 1;
  readonly op: 'held';
  readonly checkpoint: string;
  /** CLOCK_MONOTONIC ns when the shim held every lock (right before execve) */
  readonly heldNs: string;
  readonly posix: readonly PosixTiming[];
}
export type ClientMessage = ReceiveRequest | ReadyNotice | ConfirmRequest | HeldReport;

export interface Refusal { readonly v: 1; readonly op: 'refused'; readonly code: RefusalCode; readonly message: string }
export interface Offer {
  readonly v: 1;
  readonly op: 'offer';
  readonly checkpoint: string;
  /** identifies the dump (createdAt + source root pid) so the shim can check it restores the same image */
  readonly fingerprint: string;
  readonly total: number;
  readonly chunks: number;
}
export interface FdsChunk { readonly v: 1; readonly op: 'fds'; readonly seq: number; readonly fileIds: readonly number[] }
export interface Confirmed { readonly v: 1; readonly op: 'confirmed' }
export type VaultMessage = Refusal | Offer | FdsChunk | Confirmed;

export interface ProtocolViolation { readonly violation: RefusalCode; readonly message: string }

export function isViolation<T>(x: T | ProtocolViolation): x is ProtocolViolation {
  return typeof x === 'object' && x !== null && 'violation' in x;
}

export function encode(msg: ClientMessage | VaultMessage): Buffer {
  return Buffer.from(JSON.stringify(msg), 'utf8');
}

function bad(message: string, violation: RefusalCode = 'malformed'): ProtocolViolation {
  return { violation, message };
}

export function validCheckpointName(name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name);
}

function parseObject(data: Buffer): Record<string, unknown> | ProtocolViolation {
  let obj: unknown;
  try {
    obj = JSON.parse(data.toString('utf8'));
  } catch (err) {
    return bad(`not JSON: ${(err as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return bad('message is not a JSON object');
  const o = obj as Record<string, unknown>;
  if (o.v !== PROTOCOL_VERSION) {
    return bad(`protocol version ${JSON.stringify(o.v)} is not supported (this side speaks ${PROTOCOL_VERSION})`, 'version');
  }
  return o;
}

function fileIdList(x: unknown, what: string, max: number): readonly number[] | ProtocolViolation {
  if (!Array.isArray(x)) return bad(`${what} must be an array`);
  if (x.length > max) return bad(`${what} lists ${x.length} ids (at most ${max})`);
  for (const [i, id] of x.entries()) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) return bad(`${what}[${i}] is not a file id`);
  }
  return x as number[];
}

const DECIMAL = /^\d{1,20}$/;

/** Parse a shim→vault message. Pure; hostile input yields a violation, never an exception. */
export function parseClientMessage(data: Buffer): ClientMessage | ProtocolViolation {
  const o = parseObject(data);
  if (isViolation(o)) return o;
  const allowed = (keys: readonly string[]): ProtocolViolation | null => {
    const extra = Object.keys(o).filter((k) => !keys.includes(k));
    return extra.length ? bad(`unexpected field(s) ${extra.join(', ')} in "${String(o.op)}"`) : null;
  };
  if (!validCheckpointName(o.checkpoint)) return bad('checkpoint must be a name like "ns/name" or "name"');
  switch (o.op) {
    case 'receive': {
      const e = allowed(['v', 'op', 'checkpoint']);
      return e ?? { v: 1, op: 'receive', checkpoint: o.checkpoint };
    }
    case 'ready': {
      const e = allowed(['v', 'op', 'checkpoint', 'queuedPosix']);
      if (e) return e;
      if (!Number.isSafeInteger(o.queuedPosix) || (o.queuedPosix as number) < 0) return bad('queuedPosix must be a count');
      return { v: 1, op: 'ready', checkpoint: o.checkpoint, queuedPosix: o.queuedPosix as number };
    }
    case 'confirm': {
      const e = allowed(['v', 'op', 'checkpoint', 'fileIds']);
      if (e) return e;
      const ids = fileIdList(o.fileIds, 'fileIds', 1 << 20);
      if (isViolation(ids)) return ids;
      return { v: 1, op: 'confirm', checkpoint: o.checkpoint, fileIds: ids };
    }
    case 'held': {
      const e = allowed(['v', 'op', 'checkpoint', 'heldNs', 'posix']);
      if (e) return e;
      if (typeof o.heldNs !== 'string' || !DECIMAL.test(o.heldNs)) return bad('heldNs must be a decimal string');
      if (!Array.isArray(o.posix) || o.posix.length > 100_000) return bad('posix must be an array');
      const posix: PosixTiming[] = [];
      for (const [i, p] of (o.posix as unknown[]).entries()) {
        if (typeof p !== 'object' || p === null) return bad(`posix[${i}] is not an object`);
        const t = p as Record<string, unknown>;
        if (!Number.isSafeInteger(t.fileId) || typeof t.start !== 'string' || !DECIMAL.test(t.start)
          || typeof t.end !== 'string' || !(t.end === 'EOF' || DECIMAL.test(t.end))
          || typeof t.acquiredNs !== 'string' || !DECIMAL.test(t.acquiredNs) || typeof t.queued !== 'boolean') {
          return bad(`posix[${i}] needs fileId, start, end, acquiredNs, queued`);
        }
        posix.push({ fileId: t.fileId as number, start: t.start, end: t.end, acquiredNs: t.acquiredNs, queued: t.queued });
      }
      return { v: 1, op: 'held', checkpoint: o.checkpoint, heldNs: o.heldNs, posix };
    }
    default:
      return bad(`unknown op ${JSON.stringify(o.op)}`);
  }
}

/** Parse a vault→shim message (the shim trusts the vault's socket path, but still checks shapes). */
export function parseVaultMessage(data: Buffer): VaultMessage | ProtocolViolation {
  const o = parseObject(data);
  if (isViolation(o)) return o;
  switch (o.op) {
    case 'refused':
      if (typeof o.code !== 'string' || typeof o.message !== 'string') return bad('refusal needs code and message');
      return { v: 1, op: 'refused', code: o.code as RefusalCode, message: o.message };
    case 'offer':
      if (!validCheckpointName(o.checkpoint) || typeof o.fingerprint !== 'string'
        || !Number.isSafeInteger(o.total) || !Number.isSafeInteger(o.chunks)
        || (o.total as number) < 0 || (o.chunks as number) < 0
        || (o.chunks as number) !== Math.ceil((o.total as number) / FDS_PER_CHUNK)) {
        return bad('offer needs checkpoint, fingerprint, total, chunks = ceil(total / FDS_PER_CHUNK)');
      }
      return { v: 1, op: 'offer', checkpoint: o.checkpoint, fingerprint: o.fingerprint, total: o.total as number, chunks: o.chunks as number };
    case 'fds': {
      if (!Number.isSafeInteger(o.seq)) return bad('fds needs seq');
      const ids = fileIdList(o.fileIds, 'fileIds', FDS_PER_CHUNK);
      if (isViolation(ids)) return ids;
      return { v: 1, op: 'fds', seq: o.seq as number, fileIds: ids };
    }
    case 'confirmed':
      return { v: 1, op: 'confirmed' };
    default:
      return bad(`unknown op ${JSON.stringify(o.op)}`);
  }
}

/** Split fileIds into FDS_PER_CHUNK-sized chunks, in order. */
export function chunkIds(ids: readonly number[]): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < ids.length; i += FDS_PER_CHUNK) out.push(ids.slice(i, i + FDS_PER_CHUNK));
  return out;
}

/** Does a confirmation list exactly the ids that were sent (as a set, no duplicates)? */
export function confirmMatches(sent: readonly number[], confirmed: readonly number[]): boolean {
  if (sent.length !== confirmed.length) return false;
  const s = new Set(sent);
  const c = new Set(confirmed);
  if (c.size !== confirmed.length) return false;
  for (const id of c) if (!s.has(id)) return false;
  return true;
}
