/**
 * kubectl and helm from the Kubernetes test binaries, as child processes: what users run. They get
 * private cache/config directories (no ~/.kube/cache, no ~/.config/helm): kubectl one discovery
 * cache per test server (discovery is most of a cold kubectl call), helm a fresh one per call.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { k8sAssets } from './assets.js';

export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ToolOptions {
  readonly kubeconfig?: string;
  readonly input?: string;
  readonly timeoutMs?: number;
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
}

function run(bin: string, args: readonly string[], o: ToolOptions, env: NodeJS.ProcessEnv): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: o.cwd, env: { ...process.env, ...env, ...o.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    child.stdin.end(o.input ?? '');
  });
}

async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * kubectl's discovery cache: next to a test server's kubeconfig (its temp dir goes with the server,
 * even when the test process is killed), else a temp dir for this call.
 */
async function withKubectlCache<T>(kubeconfig: string | undefined, fn: (dir: string) => Promise<T>): Promise<T> {
  const serverDir = kubeconfig && path.basename(path.dirname(kubeconfig)).startsWith('lockmig-envtest-') ? path.dirname(kubeconfig)
    : kubeconfig && path.basename(path.dirname(path.dirname(kubeconfig))).startsWith('lockmig-envtest-') ? path.dirname(path.dirname(kubeconfig)) : undefined;
  if (serverDir) return fn(path.join(serverDir, 'kubectl-cache'));
  return withTempDir('lockmig-kubectl-', fn);
}

/** `kubectl [--kubeconfig K] ARGS…` (discovery cached per test server). */
export function kubectl(args: readonly string[], o: ToolOptions = {}): Promise<ToolResult> {
  return withKubectlCache(o.kubeconfig, (cache) => run(k8sAssets().bin.kubectl, [...(o.kubeconfig ? ['--kubeconfig', o.kubeconfig] : []), '--cache-dir', cache, ...args], o, {}));
}

/** `helm ARGS…` with KUBECONFIG set when given; helm's cache/config/data dirs in a temp dir. */
export function helm(args: readonly string[], o: ToolOptions = {}): Promise<ToolResult> {
  return withTempDir('lockmig-helm-', (home) => run(k8sAssets().bin.helm, args, o, {
    HELM_CACHE_HOME: path.join(home, 'cache'), HELM_CONFIG_HOME: path.join(home, 'config'), HELM_DATA_HOME: path.join(home, 'data'),
    ...(o.kubeconfig ? { KUBECONFIG: o.kubeconfig } : {}),
  }));
}

/** Throws with both streams unless the tool exited 0; returns stdout. */
export function ok(r: ToolResult, what: string): string {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`.trimEnd());
  return r.stdout;
}
