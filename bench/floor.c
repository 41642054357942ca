/*
 * The floor for a dump: what any tool that reads a process's lock state from /proc must at least
 * do, done as plainly as C can. For every fd of PID: read /proc/PID/fdinfo/<fd> to the end and
 * readlink /proc/PID/fd/<fd> (both through a directory fd, the cheapest path lookup).
 * Compiled by bench/baselines.ts with gcc -O2 at bench time.
 *
 * Prints one line: <fds read> <bytes read> <milliseconds spent reading, CLOCK_MONOTONIC>
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s PID\n", argv[0]); return 2; }
  double t0 = now_ms();
  char p[64];
  snprintf(p, sizeof p, "/proc/%s/fd", argv[1]);
  int fdd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  snprintf(p, sizeof p, "/proc/%s/fdinfo", argv[1]);
  int infod = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fdd < 0 || infod < 0) { perror("open /proc/PID"); return 1; }
  DIR *d = fdopendir(dup(fdd));
  if (!d) { perror("fdopendir"); return 1; }
  static char buf[65536], link[4096];
  long n = 0, bytes = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int f = openat(infod, e->d_name, O_RDONLY | O_CLOEXEC);
    if (f < 0) continue;
    ssize_t r;
    /* proc's seq files fill the buffer as far as they can: a short read is the end */
    while ((r = read(f, buf, sizeof buf)) > 0) { bytes += r; if ((size_t)r < sizeof buf) break; }
    close(f);
    ssize_t l = readlinkat(fdd, e->d_name, link, sizeof link);
    if (l > 0) bytes += l;
    n++;
  }
  printf("%ld %ld %.3f\n", n, bytes, now_ms() - t0);
  return 0;
}
