/**
 * The SCM_RIGHTS socket layer against the kernel: descriptors really arrive (same open
 * file description, close-on-exec), truncated messages never leak descriptors, SO_PEERCRED
 * names the real peer process, and waiting for a socket does not freeze the event loop.
 */
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import {
  seqpacketPair, seqpacketSocket, bindUnix, listen, accept4, connectUnix, sendMessage, recvMessage,
  peerCred, poll, pollAsync, Waker, cmsgLen, cmsgSpace, POLLIN,
} from '../../src/sys/socket.js';
import { open, close, getFdFlags, sameFileDescription, getpid, O_RDWR, O_CREAT, O_CLOEXEC, FD_CLOEXEC } from '../../src/sys/libc.js';
import { tmpDir, readLine, PY } from './helpers.js';

const openFds = () => fs.readdirSync('/proc/self/fd').length;

describe('socket layer (SOCK_SEQPACKET + SCM_RIGHTS)', () => {
  it('computes CMSG sizes the way <sys/socket.h> does on LP64', () => {
    expect(cmsgLen(4)).toBe(20);
    expect(cmsgSpace(4)).toBe(24);
    expect(cmsgSpace(12)).toBe(32);
    expect(cmsgLen(4 * 253)).toBe(16 + 1012);
  });

  it('passes descriptors that share the sender\'s open file description and arrive close-on-exec', () => {
    const dir = tmpDir('sock');
    const [a, b] = seqpacketPair();
    const f1 = open(path.join(dir, 'one'), O_RDWR | O_CREAT | O_CLOEXEC);
    const f2 = open(path.join(dir, 'two'), O_RDWR | O_CREAT | O_CLOEXEC);
    try {
      expect(sendMessage(a, Buffer.from('{"x":1}'), [f1, f2])).toBe(7);
      const m = recvMessage(b, 100, 4)!;
      expect(m.data.toString()).toBe('{"x":1}');
      expect(m.fds).toHaveLength(2);
      expect(m.truncated || m.controlTruncated).toBe(false);
      expect(sameFileDescription(getpid(), m.fds[0]!, getpid(), f1)).toBe(true);
      expect(sameFileDescription(getpid(), m.fds[1]!, getpid(), f2)).toBe(true);
      expect(getFdFlags(m.fds[0]!) & FD_CLOEXEC).toBe(FD_CLOEXEC);
      m.fds.forEach(close);
    } finally {
      [a, b, f1, f2].forEach(close);
    }
  });

  it('closes every received descriptor when the control area was truncated (MSG_CTRUNC)', () => {
    const [a, b] = seqpacketPair();
    const f = open('/dev/null', O_RDWR | O_CLOEXEC);
    const before = openFds();
    sendMessage(a, Buffer.from('x'), [f, f, f, f, f]);
    const m = recvMessage(b, 100, 1)!;
    expect(m.controlTruncated).toBe(true);
    expect(m.fds).toEqual([]);
    expect(m.closedFds).toBeGreaterThan(0);
    expect(openFds()).toBe(before);
    [a, b, f].forEach(close);
  });

  it('closes received descriptors when the data was truncated (MSG_TRUNC)', () => {
    const [a, b] = seqpacketPair();
    const f = open('/dev/null', O_RDWR | O_CLOEXEC);
    const before = openFds();
    sendMessage(a, Buffer.alloc(1000, 65), [f]);
    const m = recvMessage(b, 10, 4)!;
    expect(m.truncated).toBe(true);
    expect(m.data.length).toBe(10);
    expect(m.fds).toEqual([]);
    expect(m.closedFds).toBe(1);
    expect(openFds()).toBe(before);
    [a, b, f].forEach(close);
  });

  it('reports the peer process with SO_PEERCRED over a listening socket', async () => {
    const sock = path.join(tmpDir('sock'), 's');
    const l = seqpacketSocket({ nonblocking: true });
    bindUnix(l, sock);
    listen(l);
    // a python3 peer (not lockmig code) connects and prints its pid
    const child = spawn(PY, ['-c', `
import socket, os, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1]); print(os.getpid(), flush=True); time.sleep(5)`, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = Number(await readLine(child));
    await pollAsync([{ fd: l, events: POLLIN }], 5000);
    const c = accept4(l, { nonblocking: true })!;
    expect(c).toBeGreaterThan(0);
    const cred = peerCred(c);
    expect(cred.pid).toBe(pid);
    expect(cred.uid).toBe(process.getuid!());
    child.kill();
    [c, l].forEach(close);
  });

  it('pollAsync waits on a worker thread: timers keep firing while it waits, and a Waker ends it', async () => {
    const [a, b] = seqpacketPair();
    const w = new Waker();
    let ticks = 0;
    const iv = setInterval(() => ticks++, 5);
    const t0 = Date.now();
    setTimeout(() => w.wake(), 100);
    const rev = await pollAsync([{ fd: w.fd, events: POLLIN }, { fd: b, events: POLLIN }], 10_000);
    clearInterval(iv);
    expect(rev[0]! & POLLIN).toBe(POLLIN);
    expect(rev[1]).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(ticks).toBeGreaterThan(3);
    expect(poll([{ fd: b, events: POLLIN }], 0)).toEqual([0]);
    w.close();
    [a, b].forEach(close);
  });

  it('recvMessage returns null on an empty non-blocking socket and eof after the peer closes', () => {
    const [a, b] = seqpacketPair();
    expect(recvMessage(b, 10, 0, 0x40)).toBeNull();
    close(a);
    const m = recvMessage(b, 10, 0, 0x40)!;
    expect(m.eof).toBe(true);
    close(b);
  });

  it('connect to a missing socket fails with ENOENT', () => {
    const s = seqpacketSocket();
    expect(() => connectUnix(s, '/nonexistent/lockmig.sock')).toThrow(/ENOENT/);
    close(s);
  });
});
