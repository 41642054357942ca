/** The wire protocol as a specification: what is accepted, and what each hostile input is refused as. */
import { describe, it, expect } from 'vitest';
import {
  parseClientMessage, parseVaultMessage, isViolation, chunkIds, confirmMatches, encode, FDS_PER_CHUNK,
} from '../../src/handover/protocol.js';

const p = (x: unknown) => parseClientMessage(Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)));

describe('handover protocol', () => {
  it('accepts a receive request for "namespace/name.container" and plain names', () => {
    expect(p({ v: 1, op: 'receive', checkpoint: 'prod/db-ckpt.app' })).toEqual({ v: 1, op: 'receive', checkpoint: 'prod/db-ckpt.app' });
    expect(p({ v: 1, op: 'receive', checkpoint: 'local' })).toEqual({ v: 1, op: 'receive', checkpoint: 'local' });
  });

  it.each([
    ['not JSON', '{"v":1,"op":"rec', 'malformed'],
    ['a JSON array', '[1,2]', 'malformed'],
    ['a future version', { v: 2, op: 'receive', checkpoint: 'a' }, 'version'],
    ['no version', { op: 'receive', checkpoint: 'a' }, 'version'],
    ['an unknown op', { v: 1, op: 'steal', checkpoint: 'a' }, 'malformed'],
    ['a path-like checkpoint', { v: 1, op: 'receive', checkpoint: '../../etc' }, 'malformed'],
    ['an empty checkpoint', { v: 1, op: 'receive', checkpoint: '' }, 'malformed'],
    ['extra fields', { v: 1, op: 'receive', checkpoint: 'a', pid: 1 }, 'malformed'],
    ['confirm without ids', { v: 1, op: 'confirm', checkpoint: 'a' }, 'malformed'],
    ['confirm with a negative id', { v: 1, op: 'confirm', checkpoint: 'a', fileIds: [1, -2] }, 'malformed'],
    ['ready with a fractional count', { v: 1, op: 'ready', checkpoint: 'a', queuedPosix: 1.5 }, 'malformed'],
    ['held with a non-decimal time', { v: 1, op: 'held', checkpoint: 'a', heldNs: '1e9', posix: [] }, 'malformed'],
  ])('refuses %s', (_what, input, code) => {
    const r = p(input);
    expect(isViolation(r)).toBe(true);
    if (isViolation(r)) {
      expect(r.violation).toBe(code);
      expect(r.message.length).toBeGreaterThan(5);
    }
  });

  it('splits descriptors into chunks below SCM_MAX_FD, in order', () => {
    const ids = Array.from({ length: 1000 }, (_, i) => i + 1);
    const chunks = chunkIds(ids);
    expect(chunks).toHaveLength(Math.ceil(1000 / FDS_PER_CHUNK));
    expect(chunks.every((c) => c.length <= 253)).toBe(true);
    expect(chunks.flat()).toEqual(ids);
    expect(chunkIds([])).toEqual([]);
  });

  it('accepts a confirmation only when it lists exactly what was sent', () => {
    expect(confirmMatches([1, 2, 3], [3, 1, 2])).toBe(true);
    expect(confirmMatches([1, 2, 3], [1, 2])).toBe(false);
    expect(confirmMatches([1, 2, 3], [1, 2, 2])).toBe(false);
    expect(confirmMatches([1, 2, 3], [1, 2, 4])).toBe(false);
  });

  it('checks the vault\'s offer arithmetic on the receiving side', () => {
    const ok = parseVaultMessage(encode({ v: 1, op: 'offer', checkpoint: 'a', fingerprint: 'f', total: 251, chunks: 2 }));
    expect(isViolation(ok)).toBe(false);
    const bad = parseVaultMessage(encode({ v: 1, op: 'offer', checkpoint: 'a', fingerprint: 'f', total: 251, chunks: 1 }));
    expect(isViolation(bad)).toBe(true);
  });
});
