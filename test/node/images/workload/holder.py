#!/usr/bin/env python3
"""A stand-in for a pod's application: takes real file locks the way real programs do, reports
what it holds on stdout (one JSON line), then waits for a signal.

  holder.py --posix F      fcntl(F_SETLK) write lock on all of F   (SQLite/LMDB style, per process)
  holder.py --flock F      flock(LOCK_EX) on F                       (bbolt/Prometheus TSDB style)
  holder.py --ofd F        F_OFD_SETLK write lock on bytes 0..99 of F (per open file description)
  holder.py --sqlite DB    an SQLite database kept in EXCLUSIVE locking mode inside a write
                           transaction (other connections get "database is locked")
  holder.py --adopt        take nothing; report the inherited fds ($LOCKMIG_FDS) and wait
Started by lockmig's restore shim, it adopts the OFD and flock locks it inherited (LOCKMIG_FDS)
instead of taking them again (SQLite's POSIX locks belong to the process: taking them again is fine).
"""
import fcntl, json, os, signal, sqlite3, struct, sys

F_OFD_SETLK = getattr(fcntl, 'F_OFD_SETLK', 37)
held = {"pid": os.getpid(), "fds": {}}
keep = []

def ofd_lock(fd, start, length):
    # struct flock on x86-64/aarch64: short type, short whence, int64 start, int64 len, int pid (+pad)
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack('hhqqi4x', fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))

# A lockmig-aware program adopts what the restore shim handed it (LOCKMIG_FDS, docs/restore.md):
# an OFD or flock lock sits on an inherited description, and opening the file again would be a
# new description that conflicts with it, even inside this process.
inherited = {}
for entry in filter(None, os.environ.get('LOCKMIG_FDS', '').split(';')):
    f = entry.split(':')
    inherited.setdefault((f[1], f[5]), int(f[0]))

args = sys.argv[1:]
i = 0
while i < len(args):
    a = args[i]
    if a == '--posix':
        fd = os.open(args[i + 1], os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held["fds"][str(fd)] = ["POSIX", args[i + 1]]
        i += 2
    elif a == '--flock':
        fd = inherited.get(('FLOCK', args[i + 1]))
        if fd is None:
            fd = os.open(args[i + 1], os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held["fds"][str(fd)] = ["FLOCK", args[i + 1]]
        i += 2
    elif a == '--ofd':
        fd = inherited.get(('OFD', args[i + 1]))
        if fd is None:
            fd = os.open(args[i + 1], os.O_RDWR | os.O_CREAT, 0o644)
            ofd_lock(fd, 0, 100)
        held["fds"][str(fd)] = ["OFD", args[i + 1]]
        i += 2
    elif a == '--sqlite':
        db = sqlite3.connect(args[i + 1], isolation_level=None)
        db.execute('PRAGMA locking_mode=EXCLUSIVE')
        db.execute('PRAGMA journal_mode=DELETE')
        db.execute('CREATE TABLE IF NOT EXISTS t (x)')
        db.execute('BEGIN EXCLUSIVE')
        db.execute("INSERT INTO t VALUES ('held')")
        keep.append(db)
        held["sqlite"] = args[i + 1]
        i += 2
    elif a == '--adopt':
        held["inherited"] = os.environ.get('LOCKMIG_FDS', '')
        i += 1
    else:
        sys.exit('unknown argument ' + a)

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sys.stdout.write(json.dumps(held) + "\n")
sys.stdout.flush()
while True:
    signal.pause()
