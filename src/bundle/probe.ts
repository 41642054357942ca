/**
 * Bundle self-check: `<dir>/lib/ld.so --inhibit-cache --library-path <dir>/lib <dir>/bin/node <dir>/app/dist/src/bundle/probe.js`
 *
 * Loads the syscall layer (koffi's native module and libc through the bundled loader) and
 * makes one real syscall, then prints one JSON line. The agent can run it after installing a
 * bundle on its node; the bundle test runs it inside a chroot that holds nothing else.
 * Exit code 0 when every check passed.
 */
import { getpid } from '../sys/index.js';

function main(): number {
  const viaKoffi = getpid();
  const ok = viaKoffi === process.pid;
  process.stdout.write(`${JSON.stringify({
    ok,
    node: process.version,
    arch: process.arch,
    pid: process.pid,
    koffiPid: viaKoffi,
    execPath: process.execPath,
  })}\n`);
  return ok ? 0 : 1;
}

process.exitCode = main();
