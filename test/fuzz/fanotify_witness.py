#!/usr/bin/env python3
"""
Independent witness for "the restore opens nothing outside --allow": runs `lockmig restore`
cases and reports, from the kernel, every file any of them opened, read or wrote below a
watched directory.

Run it inside a private mount namespace (`unshare --mount --propagation private`): it
bind-mounts the watched directory onto itself, so that the directory is a mount of its own
that only this namespace sees, and puts a fanotify mount mark on it (FAN_OPEN, FAN_OPEN_EXEC,
FAN_ACCESS, FAN_MODIFY, FAN_CLOSE_WRITE, directories included). The kernel then queues one
event per open/read/write on that mount, by any process, with the opener's pid and an fd
of the file, whose /proc/self/fd link gives the path. Nothing in lockmig's code is trusted:
the witness sees the opens of the shim, of its re-executed second stage and of the exec'd
command (same pid), whatever path or fd trick was used to reach the file.

Input: a JSON file (argv[1]):
  {"watch": DIR, "parallel": N, "timeout": S,
   "controls": [{"id", "argv"}], "cases": [{"id", "argv"}]}
Output (stdout, JSON): {"controls": [...], "cases": [...], "stray": [...]} where each run has
  {"id", "pid", "exit", "stderr" (tail), "timedOut", "events": [{"path", "mask"}]}
and "stray" lists events of pids that belong to no run.
"""
import ctypes
import json
import os
import struct
import subprocess
import sys
import time

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_ACCESS = 0x1
FAN_MODIFY = 0x2
FAN_CLOSE_WRITE = 0x8
FAN_OPEN = 0x20
FAN_OPEN_EXEC = 0x1000
FAN_ONDIR = 0x40000000
FAN_Q_OVERFLOW = 0x4000
AT_FDCWD = -100
O_LARGEFILE = 0o100000
META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata (24 bytes)

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


def fail(msg):
    print(json.dumps({"error": msg}))
    sys.exit(2)


def start_witness(watch):
    r = subprocess.run(["mount", "--bind", watch, watch], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"mount --bind {watch}: {r.stderr.strip()}")
    fd = libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | O_LARGEFILE)
    if fd < 0:
        fail(f"fanotify_init: {os.strerror(ctypes.get_errno())}")
    mask = FAN_OPEN | FAN_OPEN_EXEC | FAN_ACCESS | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_ONDIR
    if libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MOUNT, mask, AT_FDCWD, watch.encode()) != 0:
        fail(f"fanotify_mark {watch}: {os.strerror(ctypes.get_errno())}")
    return fd


def drain(fan, sink):
    """Read every queued event into sink(pid, path, mask); returns False on queue overflow."""
    ok = True
    while True:
        try:
            buf = os.read(fan, 65536)
        except BlockingIOError:
            return ok
        off = 0
        while off + META.size <= len(buf):
            event_len, _vers, _res, _mlen, mask, efd, pid = META.unpack_from(buf, off)
            if mask & FAN_Q_OVERFLOW:
                ok = False
            if efd >= 0:
                try:
                    path = os.readlink(f"/proc/self/fd/{efd}")
                except OSError as e:
                    path = f"<unreadable: {e}>"
                os.close(efd)
                sink(pid, path, mask)
            off += event_len


def main():
    cfg = json.load(open(sys.argv[1]))
    fan = start_witness(cfg["watch"])
    events = {}  # pid -> [events]

    def sink(pid, path, mask):
        events.setdefault(pid, []).append({"path": path, "mask": mask})

    overflow = False

    def run_all(runs, parallel):
        nonlocal overflow
        pending = list(runs)
        active = []
        done = []
        while pending or active:
            while pending and len(active) < parallel:
                r = pending.pop(0)
                p = subprocess.Popen(r["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                active.append((r, p, time.monotonic()))
            time.sleep(0.01)
            still = []
            for r, p, t0 in active:
                timed_out = False
                if p.poll() is None:
                    if time.monotonic() - t0 < cfg["timeout"]:
                        still.append((r, p, t0))
                        continue
                    p.kill()
                    timed_out = True
                err = p.stderr.read().decode("utf8", "replace")
                p.wait()
                done.append({"id": r["id"], "pid": p.pid, "exit": p.returncode, "stderr": err[-65536:], "timedOut": timed_out,
                             "ms": round((time.monotonic() - t0) * 1000)})
            active = still
            overflow = (not drain(fan, sink)) or overflow
        return done

    controls = run_all(cfg["controls"], 1)
    cases = run_all(cfg["cases"], cfg["parallel"])
    overflow = (not drain(fan, sink)) or overflow
    owned = set()
    for r in controls + cases:
        r["events"] = events.get(r["pid"], [])
        owned.add(r["pid"])
    stray = [dict(e, pid=pid) for pid, es in events.items() if pid not in owned for e in es]
    print(json.dumps({"controls": controls, "cases": cases, "stray": stray, "overflow": overflow, "self": os.getpid()}))


main()
