/**
 * Shared test environment checks. A test that needs root or an external tool must say so
 * loudly when it cannot run; CI runs as root with every tool installed, so nothing is
 * skipped there.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { findK8sAssets } from '../support/envtest/assets.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = path.join(REPO_ROOT, 'dist/src/cli/main.js');

export const isRoot = process.getuid?.() === 0;

export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).status === 0;
}

/**
 * Prints a loud banner and returns true when the requirement is missing (use with it.skipIf / describe.skipIf).
 * `k8s`: the Kubernetes test binaries (etcd, kube-apiserver, kubectl, helm; test/support/envtest/assets.ts).
 */
export function missing(what: { root?: boolean; tools?: readonly string[]; k8s?: boolean }, suite: string): boolean {
  const lacks: string[] = [];
  if (what.root && !isRoot) lacks.push('root privileges');
  for (const t of what.tools ?? []) if (!hasTool(t)) lacks.push(`the tool "${t}"`);
  if (what.k8s) {
    const k = findK8sAssets();
    if (!k.ok) lacks.push(`the Kubernetes test binaries (etcd, kube-apiserver, kubectl, helm): ${k.reason}; see README "Tests"`);
  }
  if (lacks.length === 0) return false;
  const msg = `\n!!!!!!!! SKIPPING "${suite}": needs ${lacks.join(', ')} — these tests did NOT run !!!!!!!!\n`;
  process.stderr.write(msg);
  if (process.env.CI) throw new Error(`CI must provide ${lacks.join(', ')} for "${suite}"`);
  return true;
}

/** Run the compiled lockmig CLI synchronously. */
export function runCli(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}) {
  return spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8', env: { ...process.env, ...opts.env }, input: opts.input, timeout: opts.timeoutMs ?? 60_000,
  });
}
