/**
 * The vault against real processes: a python3 workload in its own mount+pid namespace holds
 * OFD, flock and POSIX locks; the vault takes its descriptions with pidfd_getfd; the workload
 * is killed; receivers run in real cgroup2 cgroups. Lock state is checked with independent
 * tools (flock(1), python3 fcntl, /proc/locks), never with lockmig code.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import winston from 'winston';
import { Vault, CgroupPathMatcher, NobodyMatcher, TakeoverError } from '../../src/handover/index.js';
import { missing } from '../helpers/env.js';
import {
  TestCgroup, startHolder, checkpointOf, tmpDir, flockFree, ofdFree, runReceiver, procLocksFor, inCgroup,
  FIXTURES, DIST, PY, readLine, type Holder,
} from './helpers.js';

const skip = missing({ root: true, tools: ['unshare', 'flock', 'python3'] }, 'handover vault');

function captureLogger(): { logger: winston.Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) records.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: winston.createLogger({ format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] }), records };
}

/** Run the raw python client asynchronously: the vault serves on this process's event loop. */
function raw(sock: string, mode: string, arg: string, cg?: TestCgroup): Promise<{ replies: Record<string, unknown>[]; fds: number }> {
  const argv = inCgroup(cg, [PY, path.join(FIXTURES, 'rawclient.py'), sock, mode, arg]);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`rawclient exited with ${code}`));
      else resolve(JSON.parse(out) as { replies: Record<string, unknown>[]; fds: number });
    });
  });
}

/** Wait for a vault event while Node's loop runs (the vault serves on it). */
function next<T>(v: Vault, ev: 'delivered' | 'aborted' | 'released' | 'lost' | 'refused', timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${ev} event within ${timeoutMs} ms`)), timeoutMs);
    v.once(ev, (x: unknown) => { clearTimeout(t); resolve(x as T); });
  });
}

describe.skipIf(skip)('handover vault (real processes, namespaces, cgroups)', () => {
  let dir: string;
  let target: TestCgroup;
  let other: TestCgroup;
  let sock: string;
  let vault: Vault;
  let log: ReturnType<typeof captureLogger>;
  const files = () => ({ ofd: path.join(dir, 'ofd.db'), fl: path.join(dir, 'flock.db'), px: path.join(dir, 'posix.db') });

  beforeAll(() => {
    dir = tmpDir('vault');
    for (const f of Object.values(files())) fs.writeFileSync(f, 'x'.repeat(4096));
    target = new TestCgroup('target');
    other = new TestCgroup('other');
    sock = path.join(dir, 'vault.sock');
    log = captureLogger();
    vault = new Vault({ socketPath: sock, logger: log.logger, stateFile: path.join(dir, 'vault.state'), connectionTimeoutMs: 3000 });
    vault.start();
  });
  afterAll(async () => {
    await vault?.close();
    await target?.remove();
    await other?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function holdAndKill(name: string, opts: { releaseAfterMs?: number; nobody?: boolean } = {}): Promise<Holder> {
    const f = files();
    const h = await startHolder([
      { path: f.ofd, fd: 7, kind: 'OFD', type: 'WRITE', start: 0, len: 100 },
      { path: f.fl, fd: 9, kind: 'FLOCK', type: 'WRITE' },
      { path: f.px, fd: 12, kind: 'POSIX', type: 'WRITE', start: 10, len: 10 },
    ]);
    const plan = vault.takeOver(name, checkpointOf(h), {
      matcher: opts.nobody ? new NobodyMatcher() : new CgroupPathMatcher(target.rel),
      ...(opts.releaseAfterMs !== undefined ? { releaseAfterMs: opts.releaseAfterMs } : {}),
    });
    expect(plan.moved.map((l) => l.kind).sort()).toEqual(['FLOCK', 'OFD']);
    expect(plan.retaken.map((l) => l.kind)).toEqual(['POSIX']);
    h.kill('SIGKILL');
    await h.exited();
    expect(fs.existsSync(`/proc/${h.pid}`)).toBe(false);
    return h;
  }

  it('keeps OFD and flock locks held after the source is killed, hands them to the target once, then holds nothing', async () => {
    const f = files();
    await holdAndKill('prod/db.app');
    // the source is gone: its POSIX lock is free, the description-owned locks are not
    expect(ofdFree(f.px, 10, 10)).toBe(true);
    expect(ofdFree(f.ofd, 0, 100)).toBe(false);
    expect(flockFree(f.fl)).toBe(false);
    expect(vault.heldDescriptions()).toBe(3);

    // a process in another cgroup is refused and receives no descriptor
    const intruder = await raw(sock, 'receive', 'prod/db.app', other);
    expect(intruder.fds).toBe(0);
    expect(intruder.replies[0]).toMatchObject({ op: 'refused', code: 'not-target' });
    expect(vault.status('prod/db.app')?.state).toBe('held');

    // the target receives every description and confirms
    const delivered = next<{ files: number }>(vault, 'delivered');
    const r = runReceiver(sock, 'prod/db.app', 'confirm', target);
    const got = await r.result;
    expect(got.ok).toBe(true);
    expect((await delivered).files).toBe(3);
    const fdinfo = got.fdinfo as Record<string, string>;
    expect(Object.keys(got.fds as object).sort()).toEqual(['1', '2', '3']);
    expect(fdinfo['1']).toMatch(/lock:\s+\d+: OFDLCK\s+ADVISORY\s+WRITE -1 \S+ 0 99/);
    expect(fdinfo['2']).toMatch(/lock:\s+\d+: FLOCK\s+ADVISORY\s+WRITE \d+/);
    expect(vault.heldDescriptions()).toBe(0);
    expect(vault.status('prod/db.app')?.state).toBe('delivered');
    // the receiver alone holds them now
    expect(ofdFree(f.ofd, 0, 100)).toBe(false);
    expect(flockFree(f.fl)).toBe(false);

    // a second request for the same checkpoint is refused, even from the target cgroup
    const replay = await raw(sock, 'receive', 'prod/db.app', target);
    expect(replay.fds).toBe(0);
    expect(replay.replies[0]).toMatchObject({ op: 'refused', code: 'already-delivered' });

    r.child.kill('SIGTERM');
    await new Promise((res) => r.child.once('exit', res));
    expect(ofdFree(f.ofd, 0, 100)).toBe(true);
    expect(flockFree(f.fl)).toBe(true);

    // every refusal was logged as structured JSON with the peer's pid and uid
    const refusals = log.records.filter((x) => x.event === 'refused');
    expect(refusals.map((x) => x.code)).toEqual(expect.arrayContaining(['not-target', 'already-delivered']));
    for (const x of refusals) {
      expect(typeof x.peerPid).toBe('number');
      expect(x.peerUid).toBe(0);
    }
  });

  it('refuses malformed, truncated, oversized and fd-carrying requests and keeps serving', async () => {
    const f = files();
    await holdAndKill('prod/hostile.app');
    const cases: [string, string, string][] = [
      ['json', 'this is not json', 'malformed'],
      ['json', '{"v":1,"op":"receive","checkpoint":"prod/hos', 'malformed'],
      ['json', '{"v":9,"op":"receive","checkpoint":"prod/hostile.app"}', 'version'],
      ['json', '{"v":1,"op":"confirm","checkpoint":"prod/hostile.app","fileIds":[1,2,3]}', 'out-of-order'],
      ['big', String(200_000), 'oversized'],
      ['withfd', '{"v":1,"op":"receive","checkpoint":"prod/hostile.app"}', 'unexpected-fds'],
      ['receive', 'prod/nothing-here', 'unknown-checkpoint'],
    ];
    for (const [mode, arg, code] of cases) {
      const out = await raw(sock, mode, arg, target);
      expect(out.fds, `${mode} ${arg}`).toBe(0);
      expect(out.replies[0], `${mode} ${arg.slice(0, 40)}`).toMatchObject({ op: 'refused', code });
      expect(vault.status('prod/hostile.app')?.state).toBe('held');
    }
    // a client that connects and says nothing is timed out without disturbing anyone
    const silent = spawn(PY, ['-c', 'import socket,sys,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); time.sleep(30)', sock]);
    expect(ofdFree(f.ofd, 0, 100)).toBe(false);
    // still serving: the real target gets everything
    const r = runReceiver(sock, 'prod/hostile.app', 'confirm', target);
    expect((await r.result).ok).toBe(true);
    expect(vault.heldDescriptions()).toBe(0);
    r.child.kill('SIGTERM');
    silent.kill('SIGKILL');
    await new Promise((res) => r.child.once('exit', res));
  });

  it('still holds the locks when the receiver dies mid-transfer, and a retry works', async () => {
    const f = files();
    await holdAndKill('prod/retry.app');
    const aborted = next(vault, 'aborted');
    const dead = runReceiver(sock, 'prod/retry.app', 'noconfirm', target);
    expect((await dead.result).ok).toBe(true); // it had the fds, then exited without confirming
    await aborted;
    expect(vault.status('prod/retry.app')?.state).toBe('held');
    expect(vault.heldDescriptions()).toBe(3);
    expect(ofdFree(f.ofd, 0, 100)).toBe(false);
    expect(flockFree(f.fl)).toBe(false);
    const again = runReceiver(sock, 'prod/retry.app', 'confirm', target);
    expect((await again.result).ok).toBe(true);
    expect(vault.status('prod/retry.app')?.state).toBe('delivered');
    again.child.kill('SIGTERM');
    await new Promise((res) => again.child.once('exit', res));
  });

  it('releases after the configured timeout when the target never comes, and says so', async () => {
    const f = files();
    const released = next<{ checkpoint: string; reason: string }>(vault, 'released');
    await holdAndKill('prod/nobody.app', { releaseAfterMs: 300, nobody: true });
    expect(ofdFree(f.ofd, 0, 100)).toBe(false);
    expect(await released).toMatchObject({ checkpoint: 'prod/nobody.app', reason: 'timeout' });
    expect(ofdFree(f.ofd, 0, 100)).toBe(true);
    expect(flockFree(f.fl)).toBe(true);
    expect(log.records.some((x) => x.event === 'released' && x.reason === 'timeout')).toBe(true);
  });

  it('refuses to take over when the source no longer holds what the checkpoint says', async () => {
    const f = files();
    const h = await startHolder([{ path: f.ofd, fd: 7, kind: 'OFD', type: 'WRITE', start: 0, len: 100 }]);
    const ckpt = checkpointOf(h);
    const stale = { ...ckpt, locks: ckpt.locks.map((l) => ({ ...l, start: 5n })) };
    expect(() => vault.takeOver('prod/stale.app', stale, { matcher: new NobodyMatcher() })).toThrow(TakeoverError);
    expect(vault.status('prod/stale.app')).toBeUndefined();
    expect(fs.readdirSync('/proc/self/fd').every((fd) => {
      try { return !fs.readlinkSync(`/proc/self/fd/${fd}`).endsWith('ofd.db'); } catch { return true; }
    })).toBe(true);
    h.kill();
    await h.exited();
  });

  it('reports descriptions lost by a vault that died (restart) through the "lost" event', async () => {
    const state = path.join(dir, 'restart.state');
    const lockFile = path.join(dir, 'restart.db');
    fs.writeFileSync(lockFile, 'x');
    const child = spawn(process.execPath, [path.join(FIXTURES, 'vault-proc.mjs'), DIST, path.join(dir, 'v2.sock'), state, lockFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    expect(await readLine(child)).toBe('ready');
    expect(ofdFree(lockFile)).toBe(false);
    child.kill('SIGKILL');
    await new Promise((res) => child.once('exit', res));
    expect(ofdFree(lockFile)).toBe(true); // the kernel released them with the process
    const v2 = new Vault({ socketPath: path.join(dir, 'v2.sock'), stateFile: state });
    const lost = next<{ checkpoints: { name: string }[]; reason: string; previousPid: number }>(v2, 'lost');
    v2.start();
    const ev = await lost;
    expect(ev.reason).toBe('vault-restarted');
    expect(ev.previousPid).toBe(child.pid);
    expect(ev.checkpoints.map((c) => c.name)).toEqual(['prod/db.app']);
    await v2.close();
  });

  it('refuses to start on a socket another live vault serves, but replaces a stale socket file', async () => {
    expect(() => new Vault({ socketPath: sock }).start()).toThrow(/another vault is serving/);
    const stale = path.join(dir, 'stale.sock');
    const v1 = new Vault({ socketPath: stale });
    v1.start();
    await v1.close();
    // simulate a crash: a socket file nobody listens on
    const { seqpacketSocket, bindUnix } = await import('../../src/sys/socket.js');
    const { close } = await import('../../src/sys/libc.js');
    const s = seqpacketSocket();
    bindUnix(s, stale);
    close(s);
    const v2 = new Vault({ socketPath: stale });
    v2.start();
    await v2.close();
  });

  it('leaves no lock of its own in /proc/locks once everything is delivered or released', () => {
    expect(vault.heldDescriptions()).toBe(0);
    const ino = fs.statSync(files().ofd, { bigint: true }).ino;
    expect(procLocksFor(ino)).toEqual([]);
  });
});
