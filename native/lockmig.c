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
 * One record per wait, 64 bytes, in memory the caller keeps alive until state is 2:
 *   0 fd, 4 cmd, 8 struct flock (32), 40 state (0 new, 1 waiting, 2 done), 44 errno (0 = granted),
 *   48 CLOCK_MONOTONIC ns when fcntl returned, 56 reserved.
 */
struct lm_wait {
    int32_t fd;
    int32_t cmd;
    struct flock fl;
    int32_t state;
    int32_t err;
    int64_t done_ns;
    int64_t reserved;
};

_Static_assert(sizeof(struct flock) == 32, "struct flock is 32 bytes on LP64 Linux");
_Static_assert(sizeof(struct lm_lock) == 40, "lm_lock layout");
_Static_assert(sizeof(struct lm_wait) == 64, "lm_wait layout");

int lm_sizeof_wait(void) { return (int)sizeof(struct lm_wait); }
int lm_sizeof_lock(void) { return (int)sizeof(struct lm_lock); }

static void *waiter(void *arg) {
    struct lm_wait *w = arg;
    struct flock fl = w->fl;
    __atomic_store_n(&w->state, 1, __ATOMIC_RELEASE);
    int r;
    do r = fcntl(w->fd, w->cmd, &fl); while (r < 0 && errno == EINTR);
    int e = r < 0 ? errno : 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->err = e;
    w->done_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    __atomic_store_n(&w->state, 2, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * Start one detached thread per record (n records, contiguous). Returns how many started; on
 * a failure to create a thread, records from there on keep state 0 and the errno is returned
 * through *err.
 */
int lm_wait_start(struct lm_wait *w, int n, int32_t *err) {
    pthread_attr_t a;
    if (pthread_attr_init(&a) != 0) { *err = ENOMEM; return 0; }
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    /* the waiters must not take signals meant for the runtime */
    sigset_t all, prev;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &prev);
    int started = 0;
    *err = 0;
    for (int i = 0; i < n; i++) {
        pthread_t t;
        int e = pthread_create(&t, &a, waiter, &w[i]);
        if (e != 0) { *err = e; break; }
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    pthread_attr_destroy(&a);
    return started;
}

/* --- 3. reading many small /proc files ----------------------------------------------------- */

/*
 * For each fd number in fds[0..n): mode 0 reads dirfd/<number> whole (an fdinfo file), mode 1
 * readlinks it (an fd link). Contents are appended to out (cap bytes); ends[i] is the offset just
 * past entry i, err[i] its errno (0 = ok; then the entry is empty). One call replaces three libc
 * calls per file from JavaScript. Returns how many entries were done: fewer than n when out is
 * full (the caller grows it and calls again from there).
 */
int lm_read_many(int dirfd, const int32_t *fds, int n, int mode, char *out, int64_t cap, int32_t *ends, int32_t *err) {
    int64_t at = 0;
    char name[16];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%d", fds[i]);
        int64_t room = cap - at;
        if (room < 4096) return i;
        err[i] = 0;
        if (mode == 1) {
            ssize_t l = readlinkat(dirfd, name, out + at, (size_t)room);
            if (l < 0) err[i] = errno;
            else if (l >= room) return i;
            else at += l;
        } else {
            int f = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
            if (f < 0) {
                err[i] = errno;
            } else {
                int64_t start = at;
                for (;;) {
                    ssize_t r = read(f, out + at, (size_t)(cap - at));
                    if (r < 0) { if (errno == EINTR) continue; err[i] = errno; at = start; break; }
                    at += r;
                    if (r == 0 || at < cap) break;
                    close(f);
                    return i; /* did not fit: the caller grows out */
                }
                close(f);
            }
        }
        ends[i] = (int32_t)at;
    }
    return n;
}
