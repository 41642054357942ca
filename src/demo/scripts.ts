/**
 * The demo's programs. They are deliberately independent of lockmig: plain python3 using
 * the standard library, the way a real application would take its locks.
 */

/**
 * The workload ("the old pod"): in its own mount+pid namespace it holds
 *  - an OFD write lock on <vol>/journal.lock (fcntl F_OFD_SETLK, whole file),
 *  - a real SQLite database <vol>/app.db inside BEGIN EXCLUSIVE (SQLite's POSIX locks),
 *  - a flock(LOCK_EX) on <vol>/leader.lock,
 * prints one JSON line and waits.
 */
export const WORKLOAD_PY = String.raw`
import fcntl, json, os, signal, sqlite3, struct, sys
vol = sys.argv[1]
ofd = os.open(os.path.join(vol, 'journal.lock'), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.fcntl(ofd, 37, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))   # F_OFD_SETLK
db = sqlite3.connect(os.path.join(vol, 'app.db'), isolation_level=None)
db.execute('create table if not exists events(at text, what text)')
db.execute('BEGIN EXCLUSIVE')
db.execute("insert into events values (datetime('now'), 'written by the old workload')")
fl = os.open(os.path.join(vol, 'leader.lock'), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fl, fcntl.LOCK_EX | fcntl.LOCK_NB)
print(json.dumps({'pid': os.getpid(), 'fds': {'journal.lock': ofd, 'leader.lock': fl}}), flush=True)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
while True:
    signal.pause()
`;

/**
 * The replacement ("the new pod"), started through the restore shim. It adopts what it
 * inherited by reading LOCKMIG_FDS, reports, and holds on.
 */
export const REPLACEMENT_PY = String.raw`
import json, os, signal, urllib.parse
fds = []
for e in filter(None, os.environ.get('LOCKMIG_FDS', '').split(';')):
    fd, kind, typ, start, end, path = e.split(':')
    fds.append({'fd': int(fd), 'kind': kind, 'type': typ, 'start': start, 'end': end, 'path': urllib.parse.unquote(path)})
print(json.dumps({'pid': os.getpid(), 'inherited': fds}), flush=True)
while True:
    signal.pause()
`;

/** Contender: try an fcntl lock without waiting; exit 0 = got it, 1 = refused (EAGAIN/EACCES). */
export const CONTEND_PY = String.raw`
import errno, fcntl, os, struct, sys
kind, path, start, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
try:
    fcntl.fcntl(fd, 37 if kind == 'ofd' else fcntl.F_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, start, length, 0))
except OSError as e:
    sys.exit(1 if e.errno in (errno.EAGAIN, errno.EACCES) else 2)
sys.exit(0)
`;

/** Fallback SQLite writer when the sqlite3 CLI is not installed. */
export const SQLITE_WRITE_PY = String.raw`
import sqlite3, sys
try:
    c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
    c.execute("insert into events values (datetime('now'), 'contender')")
except sqlite3.OperationalError as e:
    print('Error: ' + str(e), file=sys.stderr)
    sys.exit(1)
`;
