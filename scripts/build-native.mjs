#!/usr/bin/env node
/**
 * Third step of `npm run build`: compiles native/lockmig.c into dist/native/liblockmig-<arch>.so
 * (loaded with koffi by src/sys/native.ts). Needs a C compiler (cc/gcc) and the libc headers
 * (Debian: gcc libc6-dev). Without them the build goes on with a warning and the restore shim
 * uses its fallbacks (see native/lockmig.c); CI and the Dockerfile install the compiler.
 *
 * Usage: node scripts/build-native.mjs [--repo DIR] [--require]   (--require: fail without a compiler)
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const argv = process.argv.slice(2);
const repo = argv.includes('--repo') ? path.resolve(argv[argv.indexOf('--repo') + 1]) : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const required = argv.includes('--require') || process.env.LOCKMIG_REQUIRE_NATIVE === '1';
const src = path.join(repo, 'native/lockmig.c');
const outDir = path.join(repo, 'dist/native');
const out = path.join(outDir, `liblockmig-${process.arch}.so`);

const cc = [process.env.CC, 'cc', 'gcc'].filter(Boolean).find((c) => spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
if (!cc) {
  const msg = 'build-native: no C compiler (cc/gcc): dist/native is not built; the restore shim will re-exec on fd collisions and queue POSIX waits on koffi async calls (Debian: apt-get install gcc libc6-dev)';
  process.stderr.write(`${msg}\n`);
  process.exit(required ? 1 : 0);
}
fs.mkdirSync(outDir, { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const r = spawnSync(cc, ['-O2', '-g0', '-Wall', '-Wextra', '-Werror', '-fPIC', '-shared', '-pthread', '-o', tmp, src], { encoding: 'utf8' });
if (r.status !== 0) {
  fs.rmSync(tmp, { force: true });
  process.stderr.write(`build-native: ${cc} failed:\n${r.stderr}${r.stdout}`);
  process.exit(1);
}
spawnSync('strip', ['--strip-unneeded', tmp], { stdio: 'ignore' });
fs.renameSync(tmp, out);
process.stderr.write(`build-native: ${path.relative(repo, out)} (${fs.statSync(out).size} bytes)\n`);
