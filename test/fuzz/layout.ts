/**
 * The file tree hostile checkpoints are restored against. One allowed directory holds real
 * files and symlinks that try every way out: absolute and relative targets, climbing above the
 * restore root, prefix confusion (/allowed vs /allowedx), directory symlinks, loops, chains
 * longer than the kernel's 40, FIFOs and devices. Every file outside the allowed prefix is a
 * canary (its name starts with "canary-"): a restore must never open one.
 *
 *   BASE/root/                  --root (or "/" with every recorded path prefixed by BASE/root)
 *   BASE/root/allowed/…         --allow
 *   BASE/root/secret/canary-*   outside --allow, inside the root
 *   BASE/root/allowedx/canary-prefix
 *   BASE/outside/canary-*       outside the root
 *
 * The layout is data (`layoutEntries`), so the Node.js fuzz harness and the python3 witness
 * that runs the CLI in a private mount namespace build exactly the same tree.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

export type LayoutEntry =
  | { readonly kind: 'dir'; readonly path: string }
  | { readonly kind: 'file'; readonly path: string; readonly content: string }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string }
  | { readonly kind: 'fifo'; readonly path: string }
  | { readonly kind: 'chardev'; readonly path: string; readonly major: number; readonly minor: number };

/**
 * How recorded paths name files: 'in-root' restores with `--root BASE/root` and records
 * root-relative absolute paths ("/allowed/f1"); 'host' restores with `--root /` and records
 * host paths ("BASE/root/allowed/f1").
 */
export type RootMode = 'in-root' | 'host';

export interface Fixture {
  readonly base: string;
  readonly mode: RootMode;
  /** --root */
  readonly root: string;
  /** prefix of every recorded path ('' in-root, BASE/root on the host) */
  readonly prefix: string;
  /** --allow (one prefix) */
  readonly allow: readonly string[];
}

export function fixture(base: string, mode: RootMode): Fixture {
  const rootDir = path.join(base, 'root');
  const prefix = mode === 'in-root' ? '' : rootDir;
  return { base, mode, root: mode === 'in-root' ? rootDir : '/', prefix, allow: [`${prefix}/allowed`] };
}

/** Valid restore targets below the allowed prefix (relative to it). */
export const ALLOWED_FILES = ['f1', 'f2', 'f3', 'f4', 'sub/f5', 'ünïcødé', 'sp ace;:%'] as const;

const CHAIN = 45; // longer than MAXSYMLINKS (40)

export function layoutEntries(base: string, mode: RootMode): LayoutEntry[] {
  const fx = fixture(base, mode);
  const R = path.join(base, 'root');
  const P = fx.prefix; // absolute symlink targets as the restore resolves them
  const A = `${R}/allowed`;
  const e: LayoutEntry[] = [
    { kind: 'dir', path: base }, { kind: 'dir', path: R }, { kind: 'dir', path: A }, { kind: 'dir', path: `${A}/sub` },
    { kind: 'dir', path: `${A}/dir` }, { kind: 'dir', path: `${R}/secret` }, { kind: 'dir', path: `${R}/allowedx` },
    { kind: 'dir', path: `${base}/outside` },
  ];
  for (const f of ALLOWED_FILES) e.push({ kind: 'file', path: `${A}/${f}`, content: `allowed ${f}\n` });
  for (const c of ['direct', 'abs', 'rel', 'deep', 'dir', 'dd']) e.push({ kind: 'file', path: `${R}/secret/canary-${c}`, content: `canary ${c}\n` });
  e.push({ kind: 'file', path: `${R}/allowedx/canary-prefix`, content: 'canary prefix\n' });
  for (const c of ['root', 'host']) e.push({ kind: 'file', path: `${base}/outside/canary-${c}`, content: `canary ${c}\n` });
  const link = (name: string, target: string) => e.push({ kind: 'symlink', path: `${A}/${name}`, target });
  link('esc-abs', `${P}/secret/canary-abs`);
  link('esc-rel', '../secret/canary-rel');
  link('esc-root', '../../outside/canary-root');
  link('esc-deep', 'sub/../../secret/canary-deep');
  link('esc-dir', `${P}/secret`);
  link('esc-prefix', '../allowedx/canary-prefix');
  link('esc-host', `${base}/outside/canary-host`);
  link('dotdot', '..');
  link('loop', 'loop');
  link('loop-a', 'loop-b');
  link('loop-b', 'loop-a');
  link('ok-link', 'f1');
  link('ok-abs', `${P}/allowed/f2`);
  link('ok-dir', 'sub');
  link('proc-link', '/proc/self/environ');
  for (let i = 0; i < CHAIN; i++) link(`chain${i}`, i === CHAIN - 1 ? 'f3' : `chain${i + 1}`);
  e.push({ kind: 'fifo', path: `${A}/fifo` });
  e.push({ kind: 'chardev', path: `${A}/null`, major: 1, minor: 3 });
  return e;
}

/** Create the layout with Node.js (FIFOs and devices through mkfifo/mknod; a device needs root). */
export function createLayout(base: string, mode: RootMode): Fixture {
  for (const en of layoutEntries(base, mode)) {
    switch (en.kind) {
      case 'dir': fs.mkdirSync(en.path, { recursive: true }); break;
      case 'file': fs.writeFileSync(en.path, en.content); break;
      case 'symlink': fs.symlinkSync(en.target, en.path); break;
      case 'fifo': execFileSync('mkfifo', [en.path]); break;
      case 'chardev':
        try { execFileSync('mknod', [en.path, 'c', String(en.major), String(en.minor)], { stdio: 'ignore' }); } catch { /* not root: no device */ }
        break;
    }
  }
  return fixture(base, mode);
}

/**
 * Recorded paths, most of them hostile, for a fixture. Each is a string, or bytes when the path
 * is not valid UTF-8 (protobuf strings carry bytes; the reader sees replacement characters).
 */
export function recordedPaths(fx: Fixture): (string | Buffer)[] {
  const P = fx.prefix;
  const A = `${P}/allowed`;
  const long = (n: number) => `${A}/${'a'.repeat(n)}`;
  return [
    // valid
    ...ALLOWED_FILES.map((f) => `${A}/${f}`), `${A}/ok-link`, `${A}/ok-abs`, `${A}/ok-dir/f5`, `${A}/dir`, A,
    `${P}//allowed//f1`, `${A}/sub/`,
    // lexical
    `${P}/secret/canary-direct`, `${A}/../secret/canary-direct`, `${A}/./f1`, `${A}/sub/..`, `${P}/allowedx/canary-prefix`,
    'allowed/f1', '', '.', '..', `${A}/f1\0/../../secret/canary-direct`, `\0${A}/f1`, '/proc/self/environ', '/proc/1/root/etc/shadow',
    '/sys/kernel/notes', '/', `${P}/`, `${P}/allowed/..`,
    // resolution
    `${A}/esc-abs`, `${A}/esc-rel`, `${A}/esc-root`, `${A}/esc-deep`, `${A}/esc-dir/canary-dir`, `${A}/esc-prefix`, `${A}/esc-host`,
    `${A}/dotdot/secret/canary-dd`, `${A}/loop`, `${A}/loop-a`, `${A}/chain0`, `${A}/chain5`, `${A}/fifo`, `${A}/null`, `${A}/proc-link`,
    `${A}/missing`, `${A}/f1/x`, `${A}/f1/`, `${A}/esc-dir/`,
    // sizes and encodings
    long(255), long(256), long(5000), `${A}/${'d/'.repeat(2100)}x`, `${A}/${'\u{1F512}'.repeat(70)}`,
    Buffer.concat([Buffer.from(`${A}/`), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from('f1')]),
    Buffer.concat([Buffer.from(`${A}/f1`), Buffer.from([0xc0, 0xaf]), Buffer.from('../secret/canary-direct')]),
    `${A}/f1\n`, `${A}/f1 `, `${A}/F1`, `${A}/\u0066\u0031`, `${A}/f\u200b1`,
  ];
}
