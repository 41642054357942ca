/*
 * liblockmig: the two things the restore shim cannot do from JavaScript, loaded with koffi
 * (src/sys/native.ts). Built by `npm run build` (scripts/build-native.mjs) when a C compiler
 * is present; without it the shim falls back to its slower paths (a re-exec, koffi async waits).
 *
 * 1. lm_place_exec: the last step of a restore whose target fd numbers collide with fds the
 *    Node.js runtime itself holds (its epoll, eventfd and signal-pipe fds, 3..~17). The shim
 *    first gives its main thread a private fd table (unshare(CLONE_FILES)): every other thread
 *    of the runtime keeps the old table, so nothing they do can touch the numbers changed here.
 *    This function then, with no JavaScript running on the main thread (nothing can post a
 *    task, write an eventfd or run a signal handler on those numbers in between):
 *      - sets every caught signal to SIG_DFL, and SIGPIPE/SIGXFSZ back from SIG_IGN (what the
 *        program would get from a plain exec; execve resets caught ones anyway),
 *      - dup3()s each restored file from its temporary number onto its target number,
 *      - closes the temporaries,
 *      - re-takes, with F_SETLK, the POSIX locks on those files (closing any fd of a file drops
 *        the process's POSIX locks on it, so they can only be taken after the closes),
 *      - execve()s the program.
 *    When a step fails it puts everything back (the files on their temporary numbers, the
 *    runtime's own fds on theirs, the signal dispositions) and returns which step failed, so
 *    the shim can wait and try again. POSIX locks re-taken before the failure are dropped.
 *
 * 2. lm_wait_start: one thread per blocking F_SETLKW (a POSIX lock queued in the kernel before
 *    a handover's source stops). Threads of our own, not libuv's pool: no limit of 1024 pool
 *    threads or of koffi's queued async calls, a 64 KiB stack each, and they share the fd table
 *    of the thread that creates them (the private one above, when there is one). Each thread
 *    writes its result into its record and exits.
 *
 * 3. lm_read_many: the fdinfo files (or fd links) of thousands of fds in one call, for a dump.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

#define LM_VERSION 1

int lm_version(void) { return LM_VERSION; }

/* --- 1. place and exec -------------------------------------------------------------------- */

/* A POSIX lock to take with F_SETLK (command given, so F_OFD_SETLK works too). 40 bytes. */
struct lm_lock {
    int32_t fd;
    int32_t cmd;
    struct flock fl; /* short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid */
};

enum { LM_STEP_MOVE = 1, LM_STEP_LOCK = 2, LM_STEP_EXEC = 3 };

static void undo(const int32_t *moves, int nmoves, const int32_t *saved, int nsaved) {
    /* the restored files back onto their temporary numbers (close-on-exec, as the shim had them) */
    for (int i = 0; i < nmoves; i++) dup3(moves[2 * i + 1], moves[2 * i], O_CLOEXEC);
    /* the runtime's own fds back onto theirs */
    for (int i = 0; i < nsaved; i++) dup3(saved[2 * i], saved[2 * i + 1], O_CLOEXEC);
}

/*
 * moves:  nmoves pairs {temporary fd, target fd}; saved: nsaved pairs {copy, original number}
 * of whatever the targets held before (restored on failure); locks: nlocks records, taken on
 * their fd (a target number) after the moves. out[0] = failed step (0 = none), out[1] = index
 * within the step, out[2] = errno. Returns only on failure (-1), with everything undone.
 */
int lm_place_exec(const int32_t *moves, int nmoves, const int32_t *saved, int nsaved,
                  const struct lm_lock *locks, int nlocks,
                  const char *path, char *const argv[], char *const envp[], int32_t *out) {
    struct sigaction old[NSIG];
    int changed[NSIG];
    memset(changed, 0, sizeof changed);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        if (sigaction(s, NULL, &old[s]) != 0) continue;
        int caught = (old[s].sa_flags & SA_SIGINFO) ? old[s].sa_sigaction != NULL
                                                     : (old[s].sa_handler != SIG_DFL && old[s].sa_handler != SIG_IGN);
        int reset_ignored = (s == SIGPIPE || s == SIGXFSZ) && !(old[s].sa_flags & SA_SIGINFO) && old[s].sa_handler == SIG_IGN;
        if (!caught && !reset_ignored) continue;
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        if (sigaction(s, &dfl, NULL) == 0) changed[s] = 1;
    }

    int step = 0, index = 0, err = 0, done_moves = 0;
    for (int i = 0; i < nmoves; i++) {
        if (dup3(moves[2 * i], moves[2 * i + 1], 0) < 0) { step = LM_STEP_MOVE; index = i; err = errno; break; }
        done_moves++;
    }
    if (!step) {
        for (int i = 0; i < nmoves; i++) close(moves[2 * i]);
        for (int i = 0; i < nlocks; i++) {
            struct flock fl = locks[i].fl;
            if (fcntl(locks[i].fd, locks[i].cmd, &fl) < 0) { step = LM_STEP_LOCK; index = i; err = errno; break; }
        }
    }
    if (!step) {
        execve(path, argv, envp);
        step = LM_STEP_EXEC; index = 0; err = errno;
    }
    undo(moves, done_moves, saved, nsaved);
    for (int s = 1; s < NSIG; s++) if (changed[s]) sigaction(s, &old[s], NULL);
    out[0] = step;
    out[1] = index;
    out[2] = err;
    return -1;
}

/* --- 2. waiter threads --------------------------------------------------------------------- */

/*
 * One record per wait, 72 bytes, in memory the caller keeps alive until state is 2:
 *   0 fd, 4 cmd, 8 struct flock (32), 40 state (0 new, 1 waiting, 2 done), 44 errno (0 = granted),
 *   48 CLOCK_MONOTONIC ns when fcntl returned, 56 CLOCK_MONOTONIC ns when the sweeper took the
 *   lock for it (0 = it did not), 64 the waiting thread's id, 68 reserved.
 */
struct lm_wait {
    int32_t fd;
    int32_t cmd;
    struct flock fl;
    int32_t state;
    int32_t err;
    int64_t done_ns;
    int64_t swept_ns;
    int32_t tid;
    int32_t reserved;
};

_Static_assert(sizeof(struct flock) == 32, "struct flock is 32 bytes on LP64 Linux");
_Static_assert(sizeof(struct lm_lock) == 40, "lm_lock layout");
_Static_assert(sizeof(struct lm_wait) == 72, "lm_wait layout");

int lm_sizeof_wait(void) { return (int)sizeof(struct lm_wait); }
int lm_sizeof_lock(void) { return (int)sizeof(struct lm_lock); }

#include <sys/syscall.h>

/* What the threads of one lm_wait_start share (allocated there, freed by the last one out). */
struct wait_set {
    struct lm_wait *w;
    int n;
    int32_t users;   /* threads still running */
};

struct waiter_arg { struct wait_set *set; struct lm_wait *w; };

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void leave(struct wait_set *set) {
    if (__atomic_sub_fetch(&set->users, 1, __ATOMIC_ACQ_REL) == 0) free(set);
}

static void *waiter(void *arg) {
    struct waiter_arg a = *(struct waiter_arg *)arg;
    free(arg);
    struct lm_wait *w = a.w;
    struct flock fl = w->fl;
    w->tid = (int32_t)syscall(SYS_gettid);
    __atomic_store_n(&w->state, 1, __ATOMIC_RELEASE);
    int r;
    do r = fcntl(w->fd, w->cmd, &fl); while (r < 0 && errno == EINTR);
    int e = r < 0 ? errno : 0;
    w->err = e;
    w->done_ns = now_ns();
    __atomic_store_n(&w->state, 2, __ATOMIC_RELEASE);
    leave(a.set);
    return NULL;
}

/*
 * The sweeper, one more thread: it waits with F_SETLKW (queued like the waiters) for the first
 * lock that is not ours yet — the source closes its fds, and so releases its locks, in fd order —
 * and then takes every lock already free with a non-blocking F_SETLK, in one tight loop; it
 * repeats until every lock is ours. A thousand waiting threads would each have to be scheduled to
 * take their lock; this takes them as fast as the source releases them. A waiter whose range is
 * already ours gets it at once when it runs (a process never conflicts with itself).
 */
static int held_by_us(struct lm_wait *w) {
    return w->swept_ns || (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) == 2 && w->err == 0);
}

static void *sweeper(void *arg) {
    struct wait_set *set = arg;
    for (;;) {
        /* the first lock not ours yet (the source closes its fds, and so releases, in fd order) */
        int k = -1;
        for (int i = 0; i < set->n && k < 0; i++) if (!held_by_us(&set->w[i]) && set->w[i].state != 2) k = i;
        if (k < 0) break;
        struct lm_wait *w = &set->w[k];
        struct flock fl = w->fl;
        int r;
        do r = fcntl(w->fd, w->cmd, &fl); while (r < 0 && errno == EINTR); /* queued like the waiters */
        if (r != 0) break;
        if (!w->swept_ns) w->swept_ns = now_ns();
        /* then everything already free, without blocking */
        for (int i = 0; i < set->n; i++) {
            struct lm_wait *x = &set->w[i];
            if (held_by_us(x)) continue;
            struct flock f2 = x->fl;
            int cmd = x->cmd == F_SETLKW ? F_SETLK : x->cmd == F_OFD_SETLKW ? F_OFD_SETLK : x->cmd;
            if (fcntl(x->fd, cmd, &f2) == 0) x->swept_ns = now_ns();
        }
    }
    leave(set);
    return NULL;
}

/*
 * Start one detached thread per record (n records, contiguous), plus the sweeper. Returns how
 * many waits started; on a failure to create a thread, records from there on keep state 0 and
 * the errno is returned through *err.
 */
int lm_wait_start(struct lm_wait *w, int n, int32_t *err) {
    *err = 0;
    struct wait_set *set = calloc(1, sizeof *set);
    if (!set) { *err = ENOMEM; return 0; }
    set->w = w;
    set->n = n;
    set->users = 1; /* this function, until the end */
    pthread_attr_t a;
    if (pthread_attr_init(&a) != 0) { free(set); *err = ENOMEM; return 0; }
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    /* the waiters must not take signals meant for the runtime */
    sigset_t all, prev;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &prev);
    int started = 0;
    for (int i = 0; i < n; i++) {
        struct waiter_arg *wa = malloc(sizeof *wa);
        if (!wa) { *err = ENOMEM; break; }
        wa->set = set;
        wa->w = &w[i];
        __atomic_add_fetch(&set->users, 1, __ATOMIC_ACQ_REL);
        pthread_t t;
        int e = pthread_create(&t, &a, waiter, wa);
        if (e != 0) { free(wa); __atomic_sub_fetch(&set->users, 1, __ATOMIC_ACQ_REL); *err = e; break; }
        started++;
    }
    if (started > 1) {
        set->n = started;
        __atomic_add_fetch(&set->users, 1, __ATOMIC_ACQ_REL);
        pthread_t t;
        if (pthread_create(&t, &a, sweeper, set) != 0) __atomic_sub_fetch(&set->users, 1, __ATOMIC_ACQ_REL);
    }
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    pthread_attr_destroy(&a);
    leave(set);
    return started;
}

/* --- 3. reading many small /proc files ----------------------------------------------------- */

/*
 * Parses the four lines every fdinfo file starts with ("pos:\t…\nflags:\t…\nmnt_id:\t…\nino:\t…\n");
 * returns 1 when the file is exactly those (a plain file with no lock: or other lines), with
 * mnt_id and ino stored, else 0 (the caller parses the text itself).
 */
static int plain_fdinfo(const char *p, const char *end, int32_t *mnt, uint64_t *ino) {
    static const char *keys[4] = { "pos:\t", "flags:\t", "mnt_id:\t", "ino:\t" };
    uint64_t v[4];
    for (int k = 0; k < 4; k++) {
        size_t kl = strlen(keys[k]);
        if ((size_t)(end - p) < kl || memcmp(p, keys[k], kl) != 0) return 0;
        p += kl;
        uint64_t x = 0;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9') {
            uint64_t nx = x * (k == 1 ? 8 : 10) + (uint64_t)(*p - '0');
            if (nx < x) return 0; /* overflow */
            x = nx;
            p++;
        }
        if (p == d || p >= end || *p != '\n') return 0;
        p++;
        v[k] = x;
    }
    if (p != end || v[2] > 0x7fffffff) return 0;
    *mnt = (int32_t)v[2];
    *ino = v[3];
    return 1;
}

/* One thread's share of lm_read_many: entries [from, to), into a private growing buffer. */
struct read_job {
    int dirfd, mode, from, to, rootfd;
    const int32_t *fds;
    int32_t *ends, *err, *plain; /* ends relative to buf; plain: fdinfo fields (mode 0) or stat (mode 2) */
    char *buf;
    size_t len, cap;
    int failed; /* ENOMEM */
};

static int grow(struct read_job *j, size_t need) {
    if (j->len + need <= j->cap) return 0;
    size_t c = j->cap ? j->cap : 65536;
    while (c < j->len + need) c *= 2;
    char *nb = realloc(j->buf, c);
    if (!nb) return -1;
    j->buf = nb;
    j->cap = c;
    return 0;
}

#include <sys/stat.h>

/*
 * mode 2: the link just read (buf[start, len)), when it is an absolute path, stat'ed relative
 * to rootfd (the process's /proc/<pid>/root): plain[8i..8i+7] = {1 ok / -errno, dev major,
 * dev minor, nlink, mode, ino low, ino high, 0}.
 */
static void stat_below_root(struct read_job *j, int i, size_t start) {
    int32_t *o = j->plain + 8 * i;
    memset(o, 0, 8 * sizeof *o);
    size_t l = j->len - start;
    if (j->err[i] || l == 0 || j->buf[start] != '/') return;
    char path[4096];
    size_t k = start;
    while (k < j->len && j->buf[k] == '/') k++;
    size_t rl = j->len - k;
    if (rl >= sizeof path) { o[0] = -ENAMETOOLONG; return; }
    if (rl == 0) { path[0] = '.'; path[1] = 0; } else { memcpy(path, j->buf + k, rl); path[rl] = 0; }
    struct statx sx;
    if (statx(j->rootfd, path, 0, STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_INO, &sx) != 0) { o[0] = -errno; return; }
    o[0] = 1;
    o[1] = (int32_t)sx.stx_dev_major;
    o[2] = (int32_t)sx.stx_dev_minor;
    o[3] = (int32_t)sx.stx_nlink;
    o[4] = (int32_t)sx.stx_mode;
    o[5] = (int32_t)(uint32_t)(sx.stx_ino & 0xffffffffu);
    o[6] = (int32_t)(uint32_t)(sx.stx_ino >> 32);
}

static void *read_range(void *arg) {
    struct read_job *j = arg;
    char name[16];
    for (int i = j->from; i < j->to; i++) {
        snprintf(name, sizeof name, "%d", j->fds[i]);
        j->err[i] = 0;
        if (j->plain && j->mode == 0) j->plain[4 * i] = 0;
        if (grow(j, 4096)) { j->failed = ENOMEM; return NULL; }
        if (j->mode == 1 || j->mode == 2) {
            size_t start = j->len;
            for (;;) {
                ssize_t l = readlinkat(j->dirfd, name, j->buf + j->len, j->cap - j->len);
                if (l < 0) { j->err[i] = errno; break; }
                if ((size_t)l < j->cap - j->len) { j->len += (size_t)l; break; }
                if (grow(j, j->cap)) { j->failed = ENOMEM; return NULL; }
            }
            if (j->mode == 2 && j->plain) stat_below_root(j, i, start);
        } else {
            int f = openat(j->dirfd, name, O_RDONLY | O_CLOEXEC);
            if (f < 0) {
                j->err[i] = errno;
            } else {
                size_t start = j->len;
                for (;;) {
                    ssize_t r = read(f, j->buf + j->len, j->cap - j->len);
                    if (r < 0) { if (errno == EINTR) continue; j->err[i] = errno; j->len = start; break; }
                    j->len += (size_t)r;
                    /* proc's seq files fill the buffer as far as they can: a short read is the end */
                    if (r == 0 || j->len < j->cap) break;
                    if (grow(j, j->cap)) { close(f); j->failed = ENOMEM; return NULL; }
                }
                close(f);
                if (j->plain && !j->err[i]) {
                    int32_t mnt;
                    uint64_t ino;
                    if (plain_fdinfo(j->buf + start, j->buf + j->len, &mnt, &ino)) {
                        j->plain[4 * i] = 1;
                        j->plain[4 * i + 1] = mnt;
                        j->plain[4 * i + 2] = (int32_t)(uint32_t)(ino & 0xffffffffu);
                        j->plain[4 * i + 3] = (int32_t)(uint32_t)(ino >> 32);
                    }
                }
            }
        }
        j->ends[i] = (int32_t)j->len;
    }
    return NULL;
}

#define READ_THREADS_MAX 4

/*
 * For each fd number in fds[0..n): mode 0 reads dirfd/<number> whole (an fdinfo file), mode 1
 * readlinks it (an fd link). Contents are written to out (cap bytes) one after the other; ends[i]
 * is the offset just past entry i, err[i] its errno (0 = ok; then the entry is empty). With
 * `plain` (mode 0 only), plain[4i..4i+3] = {1 if the file is only the four standard lines,
 * mnt_id, ino low 32 bits, ino high 32 bits}. Mode 2 is mode 1 plus, for each absolute link, a
 * statx of that path relative to `rootfd` into plain[8i..8i+7] (see stat_below_root).
 *
 * One call replaces three libc calls per file from JavaScript, and large lists are split over up
 * to `threads` threads (the work is the kernel's: on a machine with idle cores this divides the
 * wall time). Returns n, or -(bytes needed) when out is too small (call again with a bigger one),
 * or -1 when memory ran out.
 */
long lm_read_many(int dirfd, const int32_t *fds, int n, int mode, char *out, int64_t cap, int32_t *ends, int32_t *err, int32_t *plain, int threads, int rootfd) {
    if (threads < 1) threads = 1;
    if (threads > READ_THREADS_MAX) threads = READ_THREADS_MAX;
    if (n < 256 * threads) threads = n >= 512 ? 2 : 1;
    struct read_job jobs[READ_THREADS_MAX];
    pthread_t tids[READ_THREADS_MAX];
    int started[READ_THREADS_MAX] = { 0 };
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct read_job){ .dirfd = dirfd, .rootfd = rootfd, .mode = mode, .fds = fds, .ends = ends, .err = err, .plain = plain,
                                     .from = (int)((long)n * t / threads), .to = (int)((long)n * (t + 1) / threads) };
    }
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&tids[t], NULL, read_range, &jobs[t]) == 0;
    read_range(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else read_range(&jobs[t]);
    }
    long total = 0, result = n;
    for (int t = 0; t < threads; t++) {
        if (jobs[t].failed) result = -1;
        total += (long)jobs[t].len;
    }
    if (result == n && total > cap) result = -total;
    if (result == n) {
        long base = 0;
        for (int t = 0; t < threads; t++) {
            memcpy(out + base, jobs[t].buf, jobs[t].len);
            for (int i = jobs[t].from; i < jobs[t].to; i++) ends[i] += (int32_t)base;
            base += (long)jobs[t].len;
        }
    }
    for (int t = 0; t < threads; t++) free(jobs[t].buf);
    return result;
}

#include <dirent.h>

/*
 * The numeric entries of the directory `path` (a /proc/<pid>/fd): up to cap of them into out;
 * returns how many there are (more than cap: call again with a bigger out), or -errno.
 */
int lm_list_numbers(const char *path, int32_t *out, int cap) {
    DIR *d = opendir(path);
    if (!d) return -errno;
    int n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        const char *p = e->d_name;
        if (*p < '0' || *p > '9') continue;
        long v = strtol(p, NULL, 10);
        if (n < cap) out[n] = (int32_t)v;
        n++;
    }
    int err = errno;
    closedir(d);
    return err ? -err : n;
}

/* --- 4. fsync of several files at once ---------------------------------------------------- */

static void *fsync_one(void *arg) {
    int *p = arg;
    if (fsync(p[0]) != 0) p[1] = errno;
    return NULL;
}

/*
 * fsync(2) every fd of fds[0..n) (n <= 16) on threads of its own, so the filesystem can commit
 * them together; err[i] = errno or 0. Returns the number of failures.
 */
int lm_fsync_many(const int32_t *fds, int n, int32_t *err) {
    if (n > 16) n = 16;
    int arg[16][2];
    pthread_t t[16];
    int started[16] = { 0 };
    for (int i = 0; i < n; i++) {
        arg[i][0] = fds[i];
        arg[i][1] = 0;
        if (i > 0) started[i] = pthread_create(&t[i], NULL, fsync_one, arg[i]) == 0;
    }
    if (n > 0) fsync_one(arg[0]);
    int failed = 0;
    for (int i = 1; i < n; i++) {
        if (started[i]) pthread_join(t[i], NULL);
        else fsync_one(arg[i]);
    }
    for (int i = 0; i < n; i++) { err[i] = arg[i][1]; if (arg[i][1]) failed++; }
    return failed;
}
