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

/**
 * Hammering contender for `lockmig demo --handover`: tries `F_OFD_SETLK` (write, whole file)
 * on its own description of argv[1] in a loop until the stop file argv[2] exists; a win is
 * released at once. The stop file holds "FROM_NS TO_NS" (CLOCK_MONOTONIC, like Node's
 * process.hrtime): attempts made inside that interval are counted separately. Prints
 * "started" when the first attempt is done, then one JSON line at the end.
 */
export const OFD_HAMMER_PY = String.raw`
import errno, fcntl, json, os, struct, sys, time
path, stop = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
wr = struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0)
un = struct.pack('hhqqi', fcntl.F_UNLCK, 0, 0, 0, 0)
attempts = wins = errors = 0
times, win_times, last_error = [], [], ''
while not os.path.exists(stop):
    t = time.monotonic_ns()
    attempts += 1
    times.append(t)
    try:
        fcntl.fcntl(fd, 37, wr)   # F_OFD_SETLK
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            errors += 1
            last_error = str(e)
    else:
        wins += 1
        win_times.append(t)
        fcntl.fcntl(fd, 37, un)
    if attempts == 1:
        print('started', flush=True)
    time.sleep(0.0002)
lo, hi = (int(x) for x in open(stop).read().split())
print(json.dumps({'attempts': attempts, 'wins': wins, 'errors': errors, 'lastError': last_error,
                  'attemptsInWindow': sum(1 for t in times if lo <= t <= hi),
                  'winsInWindow': sum(1 for t in win_times if lo <= t <= hi)}), flush=True)
`;

/**
 * Hammering contender for `lockmig demo --handover`: a plain shell loop running util-linux
 * `flock -n -x FILE true` until the stop file $2 exists (exit 75 = refused, 0 = won).
 * Prints "started" after the first attempt, then one JSON line at the end.
 */
export const FLOCK_HAMMER_SH = String.raw`
a=0; w=0; e=0
while [ ! -e "$2" ]; do
  a=$((a+1))
  flock -n -E 75 -x "$1" true
  case $? in 0) w=$((w+1));; 75) ;; *) e=$((e+1));; esac
  [ "$a" -eq 1 ] && echo started
done
echo "{\"attempts\":$a,\"wins\":$w,\"errors\":$e,\"lastError\":\"\",\"attemptsInWindow\":null,\"winsInWindow\":null}"
`;
