/**
 * How a restore pod starts the shim bundle (see docs/shim-bundle.md).
 *
 * The bundle carries its own dynamic loader, so the container's command starts the loader
 * directly and the loader starts the bundled Node binary. Nothing from the user's image is
 * used (no /bin/sh, no libc, no ld.so.cache): this works in scratch, distroless, alpine (musl)
 * and glibc images alike.
 *
 *   <dir>/lib/ld.so --inhibit-cache --library-path <dir>/lib <dir>/bin/node <dir>/app/dist/src/cli/main.js restore …
 *
 * - `--library-path` is the loader's own option, not LD_LIBRARY_PATH: it is not put into the
 *   environment, so the program the shim finally execve()s loads its own libraries normally.
 * - `--inhibit-cache` keeps the loader away from the image's /etc/ld.so.cache (a glibc image's
 *   cache could point at a different libstdc++ than the one Node was linked against).
 * - The loader is stored under the architecture-neutral name `ld.so` so the argv is the same
 *   on x86_64 and aarch64 nodes (each node's agent installs the bundle built for its arch).
 *
 * This module is a leaf: the webhook imports it to build the wrapped command.
 */
import path from 'node:path';

/** Paths inside a bundle directory (relative to it). */
export const SHIM_LAYOUT = {
  loader: 'lib/ld.so',
  libDir: 'lib',
  node: 'bin/node',
  cli: 'app/dist/src/cli/main.js',
  probe: 'app/dist/src/bundle/probe.js',
  manifest: 'bundle.json',
} as const;

/**
 * The agent installs bundles as `<shim dir>/<content id>/` plus a relative symlink
 * `<shim dir>/current` (src/bundle/install.ts). Restore pods mount `<shim dir>` read-only and
 * start `shimCommand('<mount path>/current')`; the link resolves inside the mount.
 */
export const SHIM_CURRENT = 'current';

/**
 * The argv prefix that runs `lockmig restore` from a bundle at `shimDir` (an absolute path as
 * the restored container sees it). Append the restore options, `--`, then the original command.
 */
export function shimCommand(shimDir: string): string[] {
  return [...shimNodeCommand(shimDir), path.posix.join(shimDir, SHIM_LAYOUT.cli), 'restore'];
}

/** The argv prefix that runs the bundled Node binary (followed by a script path and its arguments). */
export function shimNodeCommand(shimDir: string): string[] {
  if (!path.posix.isAbsolute(shimDir)) throw new Error(`shim directory must be an absolute path, got "${shimDir}"`);
  const d = path.posix.normalize(shimDir);
  return [
    path.posix.join(d, SHIM_LAYOUT.loader),
    '--inhibit-cache',
    '--library-path', path.posix.join(d, SHIM_LAYOUT.libDir),
    path.posix.join(d, SHIM_LAYOUT.node),
  ];
}
