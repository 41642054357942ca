/*
 * lockhold: a static program for the FROM-scratch workload of the real-node suite. It takes file
 * locks the way C programs do and waits, or (with --adopt) reports what it inherited.
 *
 *   lockhold --flock F     flock(LOCK_EX) on F
 *   lockhold --ofd F       F_OFD_SETLK write lock on bytes 0..99 of F
 *   lockhold --posix F     F_SETLK write lock on all of F
 *   lockhold --adopt       take nothing; print $LOCKMIG_FDS and the target of each listed fd
 *
 * It prints one JSON line on stdout once everything is held, then pauses until a signal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static int open_rw(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); exit(2); }
  return fd;
}

static void lock_fcntl(int fd, int cmd, off_t start, off_t len, const char *what) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (fcntl(fd, cmd, &fl) != 0) { fprintf(stderr, "%s: %s\n", what, strerror(errno)); exit(3); }
}

static void on_term(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
  char out[8192];
  size_t n = (size_t)snprintf(out, sizeof out, "{\"pid\":%d,\"fds\":{", (int)getpid());
  int first = 1, adopt = 0;
  for (int i = 1; i < argc; i++) {
    const char *kind = NULL;
    int fd = -1;
    if (strcmp(argv[i], "--adopt") == 0) { adopt = 1; continue; }
    if (i + 1 >= argc) { fprintf(stderr, "%s needs a file\n", argv[i]); return 2; }
    if (strcmp(argv[i], "--flock") == 0) {
      fd = open_rw(argv[i + 1]);
      if (flock(fd, LOCK_EX | LOCK_NB) != 0) { fprintf(stderr, "flock: %s\n", strerror(errno)); return 3; }
      kind = "FLOCK";
    } else if (strcmp(argv[i], "--ofd") == 0) {
      fd = open_rw(argv[i + 1]);
      lock_fcntl(fd, F_OFD_SETLK, 0, 100, "F_OFD_SETLK");
      kind = "OFD";
    } else if (strcmp(argv[i], "--posix") == 0) {
      fd = open_rw(argv[i + 1]);
      lock_fcntl(fd, F_SETLK, 0, 0, "F_SETLK");
      kind = "POSIX";
    } else {
      fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
    n += (size_t)snprintf(out + n, sizeof out - n, "%s\"%d\":[\"%s\",\"%s\"]", first ? "" : ",", fd, kind, argv[i + 1]);
    first = 0;
    i++;
  }
  n += (size_t)snprintf(out + n, sizeof out - n, "}");
  if (adopt) {
    const char *fds = getenv("LOCKMIG_FDS");
    n += (size_t)snprintf(out + n, sizeof out - n, ",\"inherited\":\"%s\"", fds ? fds : "");
  }
  snprintf(out + n, sizeof out - n, "}\n");
  fputs(out, stdout);
  fflush(stdout);
  signal(SIGTERM, on_term);
  for (;;) pause();
}
