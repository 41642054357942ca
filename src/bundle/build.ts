/**
 * Builds the self-contained restore-shim bundle (docs/shim-bundle.md):
 *
 *   <out>/lib/ld.so            the dynamic loader Node was linked against (PT_INTERP of bin/node)
 *   <out>/lib/*.so*            every shared library `ldd` lists for bin/node and koffi's .node
 *   <out>/bin/node             the Node binary (stripped when `strip` is available)
 *   <out>/app/package.json     {"type":"module"}
 *   <out>/app/dist/…           only the compiled modules reachable from `lockmig restore` (+ the probe)
 *   <out>/app/dist/native/…    liblockmig-<arch>.so (native/lockmig.c), when it was built
 *   <out>/app/node_modules/…   only the packages those modules import, and their dependencies,
 *                              without docs/sources/typings; koffi with the one native module it needs
 *   <out>/bundle.json          manifest: versions, arch, argv prefix, every file with size and sha256
 *
 * Usage: node dist/src/bundle/build.js --out DIR [--repo DIR] [--node PATH] [--no-strip]
 * (or scripts/build-shim-bundle.sh). The output directory is built beside its final place
 * and renamed into it, so a half-built bundle is never visible under that name.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SHIM_LAYOUT, shimCommand } from './command.js';

export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

export interface BuildOptions {
  /** bundle directory to create (must not exist, or be a previous bundle: it is replaced) */
  readonly out: string;
  /** repository root holding dist/ and node_modules/ (default: derived from this file) */
  readonly repo?: string;
  /** the Node binary to ship (default: the running one) */
  readonly node?: string;
  /** strip symbols from bin/node (default true when `strip` exists) */
  readonly strip?: boolean;
  /** progress lines (default: none) */
  readonly log?: (line: string) => void;
  /** compiled entry points to trace (default BUNDLE_ROOTS) */
  readonly roots?: readonly string[];
}

export interface BundleFile {
  readonly path: string;
  readonly size: number;
  readonly sha256: string;
}

export interface BundleManifest {
  readonly format: 1;
  readonly createdAt: string;
  readonly node: string;
  readonly arch: string;
  readonly libc: 'glibc';
  readonly stripped: boolean;
  readonly command: readonly string[];
  readonly totalBytes: number;
  readonly files: readonly BundleFile[];
}

/** Compiled entry points the shim needs. The command table loads subcommands lazily, so only restore's graph is traced. */
export const BUNDLE_ROOTS = ['dist/src/cli/main.js', 'dist/src/cli/commands/restore.js', 'dist/src/bundle/probe.js'] as const;

const SKIP_DIRS = new Set(['test', 'tests', '__tests__', 'doc', 'docs', 'example', 'examples', 'bench', 'benchmark', '.github', 'vendor', 'node_modules', 'man', 'coverage']);
const SKIP_FILE = /(\.md|\.markdown|\.d\.ts|\.d\.mts|\.d\.cts|\.map|\.tsbuildinfo|\.ts|\.mts|\.cts|\.cc|\.cpp|\.hh|\.h|\.c|\.S|\.asm|\.inc|\.def|\.gyp|\.gypi|\.orig|\.log)$/;
const KEEP_FILE = /^(license|licence|copying|notice)/i;
/** build-time files some packages ship next to their runtime code */
const SKIP_NAMES = new Set(['CMakeLists.txt', 'cnoke.cjs', 'binding.gyp', 'Makefile', 'tsconfig.json', '.npmignore', '.eslintrc', '.eslintrc.json', '.travis.yml']);

/** Imports a compiled (tsc, ESM) module makes: static (incl. re-exports and side-effect imports) and dynamic ones with literal specifiers. */
export function findImports(source: string): { static: string[]; dynamic: string[] } {
  const stat = new Set<string>();
  const dyn = new Set<string>();
  // statements at the start of a line (tsc and esbuild both emit them so): an "import" inside
  // a string or a switch of bundled library code (protobufjs' .proto parser) is not one
  for (const re of [/^\s*import\s[^'"`;()]*?\sfrom\s*['"]([^'"]+)['"]/gm, /^\s*export\s[^'"`;()]*?\sfrom\s*['"]([^'"]+)['"]/gm, /^\s*import\s*['"]([^'"]+)['"]/gm]) {
    for (const m of source.matchAll(re)) stat.add(m[1]!);
  }
  for (const m of source.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) dyn.add(m[1]!);
  return { static: [...stat], dynamic: [...dyn] };
}

/**
 * Modules whose dynamic imports are NOT followed: the command table lazily loads every
 * subcommand, and the shim needs only `restore` (a root of its own). Following them would pull
 * the Kubernetes client (23 MiB) into every restore pod.
 */
export const LAZY_TABLES: readonly string[] = ['dist/src/cli/commands/index.js'];

/** `@scope/name/sub` → `@scope/name`; `name/sub` → `name`. */
export function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

function isBuiltin(spec: string): boolean {
  return spec.startsWith('node:');
}

/** Walks the compiled module graph from the roots; returns the repo-relative JS files and the bare packages they import. */
export function traceDist(repo: string, roots: readonly string[], lazyTables: readonly string[] = LAZY_TABLES): { files: string[]; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>(); // package name -> importing file (for error messages)
  const queue = [...roots];
  while (queue.length > 0) {
    const rel = queue.pop()!;
    if (files.has(rel)) continue;
    const abs = path.join(repo, rel);
    if (!fs.existsSync(abs)) {
      const hint = rel.endsWith('commands/restore.js')
        ? ' (the restore command is not compiled yet: run `npm run build`, and check src/cli/commands/restore.ts exists)'
        : ' (run `npm run build` first)';
      throw new BundleError(`bundle: ${rel} is missing${hint}`);
    }
    files.add(rel);
    const imports = findImports(fs.readFileSync(abs, 'utf8'));
    const specs = lazyTables.includes(rel) ? imports.static : [...imports.static, ...imports.dynamic];
    for (const spec of specs) {
      if (isBuiltin(spec)) continue;
      if (spec.startsWith('.')) {
        queue.push(path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)));
      } else if (spec.startsWith('/')) {
        throw new BundleError(`bundle: ${rel} imports an absolute path "${spec}"; the bundle cannot carry it`);
      } else {
        const name = packageName(spec);
        if (!packages.has(name)) packages.set(name, rel);
      }
    }
  }
  return { files: [...files].sort(), packages };
}

/** Node's lookup: the nearest node_modules/<name> walking up from `fromDir`, but never above the repo. */
function findPackageDir(repo: string, fromDir: string, name: string): string | null {
  let dir = fromDir;
  for (;;) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.resolve(dir) === path.resolve(repo)) return null;
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

interface PackageJson {
  name?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/** The installed packages (absolute dirs) needed at runtime: the imported ones and, transitively, their dependencies. */
export function resolvePackages(repo: string, direct: ReadonlyMap<string, string>): string[] {
  const seen = new Set<string>();
  const queue: Array<{ name: string; from: string; required: boolean; why: string }> = [];
  for (const [name, file] of direct) queue.push({ name, from: repo, required: true, why: file });
  while (queue.length > 0) {
    const { name, from, required, why } = queue.pop()!;
    const dir = findPackageDir(repo, from, name);
    if (!dir) {
      if (required) throw new BundleError(`bundle: package "${name}" (needed by ${why}) is not installed; run \`npm ci\``);
      continue;
    }
    if (seen.has(dir)) continue;
    if (!wantedOptional(name)) continue;
    seen.add(dir);
    const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as PackageJson;
    for (const dep of Object.keys(pj.dependencies ?? {})) queue.push({ name: dep, from: dir, required: true, why: name });
    for (const dep of Object.keys(pj.optionalDependencies ?? {})) queue.push({ name: dep, from: dir, required: false, why: name });
  }
  return [...seen].sort();
}

/**
 * koffi lists prebuilt modules for every platform as optional dependencies: keep only this one.
 * Type-only packages (some libraries list @types/* as dependencies) are dropped.
 */
function wantedOptional(name: string): boolean {
  if (name.startsWith('@types/')) return false; // typings only, never loaded at run time
  const m = /^@koromix\/koffi-(.+)$/.exec(name);
  return m ? m[1] === `${process.platform}-${process.arch}` : true;
}

/** Per-file filter for package contents. koffi's platform packages keep only the glibc module. */
function keepFile(pkgName: string, relInPkg: string): boolean {
  const base = path.basename(relInPkg);
  if (KEEP_FILE.test(base)) return true;
  if (SKIP_FILE.test(base) || SKIP_NAMES.has(base)) return false;
  if (pkgName.startsWith('@koromix/koffi-') && base === 'koffi.node') {
    return relInPkg === `${process.platform}_${process.arch}/koffi.node`;
  }
  return true;
}

function copyTree(src: string, dest: string, filter: (rel: string) => boolean, rel = ''): void {
  for (const ent of fs.readdirSync(path.join(src, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    if (ent.isDirectory()) {
      if (SKIP_DIRS.has(ent.name)) continue;
      copyTree(src, dest, filter, r);
    } else if ((ent.isFile() || ent.isSymbolicLink()) && filter(r)) {
      copyFile(path.join(src, r), path.join(dest, r));
    }
  }
}

function copyFile(from: string, to: string, mode?: number): void {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(fs.realpathSync(from), to);
  if (mode !== undefined) fs.chmodSync(to, mode);
}

/** Shared libraries and the loader of an ELF file, from `ldd`. */
export function elfDependencies(file: string): { libs: string[]; loader: string } {
  const r = spawnSync('ldd', [file], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new BundleError(`bundle: ldd ${file} failed: ${r.error?.message ?? (r.stderr || r.stdout).trim()} (is it a dynamically linked glibc binary, and is ldd installed?)`);
  }
  const libs: string[] = [];
  let loader = '';
  for (const line of r.stdout.split('\n')) {
    const t = line.trim();
    const arrow = /^(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)$/.exec(t);
    if (arrow) {
      if (arrow[2] === 'not') throw new BundleError(`bundle: ${file} needs ${arrow[1]}, which is not found`);
      libs.push(arrow[2]!);
      continue;
    }
    if (/=>\s+not found/.test(t)) throw new BundleError(`bundle: ${file}: ${t}`);
    const direct = /^(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(t);
    if (direct) loader = direct[1]!;
  }
  if (!loader) throw new BundleError(`bundle: ldd ${file} names no dynamic loader (statically linked?)`);
  return { libs, loader };
}

function hasStrip(): boolean {
  return spawnSync('strip', ['--version'], { encoding: 'utf8' }).status === 0;
}

function listFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const ent of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    if (ent.isDirectory()) out.push(...listFiles(root, r));
    else out.push(r);
  }
  return out.sort();
}

/** Every regular file under `dir` (sorted), with size and sha256: the manifest's file list. */
export function describeFiles(dir: string): BundleFile[] {
  return listFiles(dir).filter((f) => f !== SHIM_LAYOUT.manifest).map((f) => {
    const st = fs.statSync(path.join(dir, f));
    return { path: f, size: st.size, sha256: sha256(path.join(dir, f)) };
  });
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export function defaultRepo(): string {
  // dist/src/bundle/build.js → repo root
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
}

export function buildShimBundle(opts: BuildOptions): BundleManifest {
  const log = opts.log ?? (() => {});
  const repo = path.resolve(opts.repo ?? defaultRepo());
  const out = path.resolve(opts.out);
  const node = fs.realpathSync(opts.node ?? process.execPath);
  if (process.platform !== 'linux') throw new BundleError('bundle: only Linux is supported');

  const tmp = `${out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true, mode: 0o755 });
  try {
    // 1. compiled modules
    const { files, packages } = traceDist(repo, opts.roots ?? BUNDLE_ROOTS);
    for (const f of files) copyFile(path.join(repo, f), path.join(tmp, 'app', f));
    fs.writeFileSync(path.join(tmp, 'app/package.json'), `${JSON.stringify({ name: 'lockmig-shim', private: true, type: 'module' }, null, 2)}\n`);
    log(`modules: ${files.length} compiled files; packages imported: ${[...packages.keys()].join(', ') || '(none)'}`);

    // 2. runtime packages, keeping their node_modules nesting
    const pkgDirs = resolvePackages(repo, packages);
    const nativeModules: string[] = [];
    for (const dir of pkgDirs) {
      const relDir = path.relative(repo, dir);
      const name = (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as PackageJson).name ?? relDir;
      copyTree(dir, path.join(tmp, 'app', relDir), (r) => keepFile(name, r));
    }
    for (const f of listFiles(path.join(tmp, 'app'))) if (f.endsWith('.node')) nativeModules.push(path.join(tmp, 'app', f));
    // liblockmig (native/lockmig.c): one start on fd collisions, POSIX waits on threads of its own
    const helper = path.join(repo, 'dist/native', `liblockmig-${process.arch}.so`);
    if (fs.existsSync(helper)) {
      const dest = path.join(tmp, 'app/dist/native', path.basename(helper));
      copyFile(helper, dest, 0o755);
      nativeModules.push(dest);
    } else {
      log(`warning: ${path.relative(repo, helper)} is not built (no C compiler?): the shim will use its fallbacks (a re-exec on fd collisions)`);
    }
    log(`packages: ${pkgDirs.length} (${pkgDirs.map((d) => path.relative(path.join(repo, 'node_modules'), d)).join(', ')})`);
    if (packages.has('koffi') && nativeModules.length === 0) {
      throw new BundleError(`bundle: koffi is imported but no native module for linux-${process.arch} (glibc) is installed`);
    }

    // 3. node, its libraries and the loader
    const strip = opts.strip ?? hasStrip();
    const nodeDest = path.join(tmp, SHIM_LAYOUT.node);
    fs.mkdirSync(path.dirname(nodeDest), { recursive: true });
    if (strip) {
      const r = spawnSync('strip', ['--strip-all', '-o', nodeDest, node], { encoding: 'utf8' });
      if (r.status !== 0) throw new BundleError(`bundle: strip ${node} failed: ${r.stderr.trim()}`);
    } else {
      copyFile(node, nodeDest);
    }
    fs.chmodSync(nodeDest, 0o755);
    const libs = new Set<string>();
    let loader = '';
    for (const elf of [node, ...nativeModules]) {
      const deps = elfDependencies(elf);
      for (const l of deps.libs) libs.add(l);
      if (elf === node) loader = deps.loader;
    }
    // koffi dlopen()s libc.so.6 by name (src/sys/libc.ts): make sure it is there even if node were linked differently.
    for (const l of [...libs]) if (path.basename(l) === 'libc.so.6') libs.add(l);
    for (const l of libs) copyFile(l, path.join(tmp, SHIM_LAYOUT.libDir, path.basename(l)), 0o755);
    if (![...libs].some((l) => path.basename(l) === 'libc.so.6')) throw new BundleError('bundle: node is not linked against glibc (libc.so.6); only glibc builds of Node can be bundled');
    copyFile(loader, path.join(tmp, SHIM_LAYOUT.loader), 0o755);
    log(`native: node${strip ? ' (stripped)' : ''}, loader ${loader}, ${libs.size} libraries (${[...libs].map((l) => path.basename(l)).join(', ')})`);

    // 4. manifest (last: its presence marks a complete bundle)
    const entries = describeFiles(tmp);
    const manifest: BundleManifest = {
      format: 1,
      createdAt: new Date().toISOString(),
      node: nodeVersion(node),
      arch: process.arch,
      libc: 'glibc',
      stripped: strip,
      command: shimCommand('/SHIM').map((a) => a.replace(/^\/SHIM/, '$SHIM')),
      totalBytes: entries.reduce((s, e) => s + e.size, 0),
      files: entries,
    };
    fs.writeFileSync(path.join(tmp, SHIM_LAYOUT.manifest), `${JSON.stringify(manifest, null, 2)}\n`);

    fs.rmSync(out, { recursive: true, force: true });
    fs.renameSync(tmp, out);
    log(`bundle: ${out} (${(manifest.totalBytes / 1048576).toFixed(1)} MiB in ${entries.length} files)`);
    return manifest;
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function nodeVersion(node: string): string {
  if (node === fs.realpathSync(process.execPath)) return process.version;
  const r = spawnSync(node, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

/** Checks a bundle directory against its manifest (sizes and checksums); returns the problems found. */
export function verifyShimBundle(dir: string): string[] {
  const problems: string[] = [];
  let manifest: BundleManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, SHIM_LAYOUT.manifest), 'utf8')) as BundleManifest;
  } catch (err) {
    return [`${SHIM_LAYOUT.manifest}: ${(err as Error).message}`];
  }
  for (const f of manifest.files) {
    const p = path.join(dir, f.path);
    if (!fs.existsSync(p)) { problems.push(`${f.path}: missing`); continue; }
    if (fs.statSync(p).size !== f.size) { problems.push(`${f.path}: size differs from the manifest`); continue; }
    if (sha256(p) !== f.sha256) problems.push(`${f.path}: checksum differs from the manifest`);
  }
  return problems;
}

async function cli(argv: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  const usage = 'usage: node dist/src/bundle/build.js --out DIR [--repo DIR] [--node PATH] [--no-strip]';
  let values: { out?: string; repo?: string; node?: string; 'no-strip'?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: { out: { type: 'string' }, repo: { type: 'string' }, node: { type: 'string' }, 'no-strip': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  if (values.help) { process.stdout.write(`${usage}\n`); return 0; }
  if (!values.out) { process.stderr.write(`--out is required\n${usage}\n`); return 2; }
  try {
    buildShimBundle({
      out: values.out, repo: values.repo, node: values.node,
      strip: values['no-strip'] ? false : undefined,
      log: (l) => process.stderr.write(`${l}\n`),
    });
    return 0;
  } catch (err) {
    if (err instanceof BundleError) { process.stderr.write(`${err.message}\n`); return 1; }
    throw err;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cli(process.argv.slice(2)).then((c) => { process.exitCode = c; });
}
