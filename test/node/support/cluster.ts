/**
 * The real-node suite's view of the cluster: kubectl and helm as a user runs them (from PATH,
 * KUBECONFIG from the environment), client-node for waits, and an "inspector" pod (privileged,
 * hostPID, on the test node) through which every host-side check runs — /proc/locks, /proc/<pid>,
 * the node's files — so the very same checks work on the kit's node and on any other cluster.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { CoreV1Api, CustomObjectsApi, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type LockCheckpoint } from '../../../src/api/index.js';

export const IMAGES = {
  lockmig: process.env.LOCKMIG_NODE_IMAGE ?? 'localhost/lockmig:dev',
  workload: process.env.LOCKMIG_NODE_WORKLOAD_IMAGE ?? 'localhost/lockmig-workload:1',
  static: process.env.LOCKMIG_NODE_STATIC_IMAGE ?? 'localhost/lockmig-static:1',
} as const;
export const RELEASE = 'lockmig';
export const SYSTEM_NS = 'lockmig-system';
/** Host directory under which the suite's hostPath data volumes live (removed at the end). */
export const HOST_DATA = '/var/tmp/lockmig-node-test';

export const kc = new KubeConfig();
kc.loadFromDefault();
export const core = kc.makeApiClient(CoreV1Api);
export const custom = kc.makeApiClient(CustomObjectsApi);

export interface Run { status: number | null; stdout: string; stderr: string }

function run(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Run {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function kubectl(args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Run {
  return run('kubectl', args, opts);
}
/** kubectl that must succeed; returns stdout. */
export function kubectlOk(args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  const r = kubectl(args, opts);
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}
export function helm(args: readonly string[], opts: { timeoutMs?: number } = {}): Run {
  return run('helm', args, opts);
}
export function apply(objects: readonly object[]): void {
  kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }) });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const suffix = () => randomBytes(3).toString('hex');

/** Polls `fn` until it returns a value that is not undefined/false; throws with the last value after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await sleep(everyMs);
  }
}

export async function getCheckpoint(namespace: string, name: string): Promise<LockCheckpoint | undefined> {
  try {
    return (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, name })) as LockCheckpoint;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}
export async function waitCheckpoint(namespace: string, name: string, pred: (c: LockCheckpoint) => boolean, what: string, timeoutMs = 60_000): Promise<LockCheckpoint> {
  return waitFor(`${what} (lockcheckpoint ${namespace}/${name})`, async () => {
    const c = await getCheckpoint(namespace, name);
    return c && pred(c) ? c : undefined;
  }, timeoutMs);
}
export async function getPod(namespace: string, name: string): Promise<V1Pod | undefined> {
  try { return await core.readNamespacedPod({ namespace, name }); } catch (err) { if ((err as { code?: number }).code === 404) return undefined; throw err; }
}
export async function waitPodReady(namespace: string, name: string, timeoutMs = 90_000): Promise<V1Pod> {
  return waitFor(`pod ${namespace}/${name} Ready`, async () => {
    const p = await getPod(namespace, name);
    return p?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
  }, timeoutMs);
}
export async function waitPodGone(namespace: string, name: string, timeoutMs = 90_000): Promise<void> {
  await waitFor(`pod ${namespace}/${name} gone`, async () => (await getPod(namespace, name)) === undefined, timeoutMs);
}

/** The node everything runs on: the first Ready node, by name. */
export async function testNode(): Promise<string> {
  const nodes = await core.listNode();
  const ready = nodes.items.filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && !n.spec?.unschedulable);
  if (ready.length === 0) throw new Error('no Ready node in the cluster');
  return ready.map((n) => n.metadata!.name!).sort()[0]!;
}

/** A fresh namespace for one test file (restore pods mount hostPaths: Pod Security privileged). */
export async function createNamespace(prefix: string): Promise<string> {
  const name = `${prefix}-${suffix()}`;
  apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'lockmig.dev/node-test': 'true', 'pod-security.kubernetes.io/enforce': 'privileged' } } }]);
  await waitFor(`default service account in ${name}`, async () => {
    try { await core.readNamespacedServiceAccount({ namespace: name, name: 'default' }); return true; } catch { return false; }
  }, 30_000);
  return name;
}
export function deleteNamespace(name: string): void {
  kubectl(['delete', 'namespace', name, '--wait=false', '--ignore-not-found']);
}

/** A pod spec pinned to the test node through the scheduler (nodeSelector), never pulling. */
export function podOn(node: string, name: string, namespace: string, spec: { containers: object[]; volumes?: object[]; [k: string]: unknown }, meta: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}): object {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace, ...meta },
    spec: { nodeSelector: { 'kubernetes.io/hostname': node }, terminationGracePeriodSeconds: 5, ...spec },
  };
}
export function hostPathVolume(name: string, hostDir: string): object {
  return { name, hostPath: { path: hostDir, type: 'DirectoryOrCreate' } };
}

// ---------------------------------------------------------------------------------------------
// The inspector: host-side checks through a privileged hostPID pod on the test node.

export class Inspector {
  private constructor(readonly namespace: string, readonly pod: string) {}

  static async start(namespace: string, node: string): Promise<Inspector> {
    const name = 'inspector';
    apply([podOn(node, name, namespace, {
      hostPID: true,
      containers: [{
        name: 'i', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['sleep', 'infinity'],
        securityContext: { privileged: true },
        volumeMounts: [{ name: 'host', mountPath: '/host' }],
      }],
      volumes: [{ name: 'host', hostPath: { path: '/', type: 'Directory' } }],
    })]);
    await waitPodReady(namespace, name);
    return new Inspector(namespace, name);
  }

  /** A shell command on the node (host /proc; the host's files under /host). */
  sh(script: string, timeoutMs = 60_000): Run {
    return kubectl(['exec', '-n', this.namespace, this.pod, '--', 'sh', '-c', script], { timeoutMs });
  }
  shOk(script: string): string {
    const r = this.sh(script);
    if (r.status !== 0) throw new Error(`inspector: ${script} failed (${r.status}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  /** "maj:min:ino" of a host path, as /proc/locks prints it. */
  fileKey(hostPath: string): string {
    const out = this.shOk(`stat -c '%d %i' '/host${hostPath}'`).trim().split(' ');
    const dev = Number(out[0]);
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${out[1]}`;
  }

  /** /proc/locks entries (holders, not waiters) on one file: kind, type and owner pid. */
  locksOn(hostPath: string): Array<{ kind: string; type: string; pid: number; start: string; end: string }> {
    const key = this.fileKey(hostPath);
    const text = this.shOk(`grep -F ' ${key} ' /proc/locks || true`);
    return text.split('\n').filter((l) => l.trim() && !l.includes('->')).map((l) => {
      const f = l.trim().split(/\s+/);
      return { kind: f[1]!, type: f[3]!, pid: Number(f[4]), start: f[6]!, end: f[7]! };
    });
  }

  /** The pod UID (dashes) whose cgroup a host pid is in, or undefined. */
  podUIDOf(pid: number): string | undefined {
    const r = this.sh(`cat /proc/${pid}/cgroup`);
    if (r.status !== 0) return undefined;
    const m = /pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})/.exec(r.stdout);
    return m ? m[1]!.replace(/_/g, '-') : undefined;
  }

  /** Host pids of a pod's container processes (not the sandbox), from /proc/<pid>/cgroup. */
  podPids(uid: string): number[] {
    const dash = uid.toLowerCase();
    const under = dash.replace(/-/g, '_');
    const out = this.shOk(`grep -lE 'pod(${dash}/[0-9a-f]{64}|${under}\\.slice/[a-z-]*[0-9a-f]{64}\\.scope)' /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3; true`);
    return out.split('\n').filter(Boolean).map(Number);
  }

  /** Every fd of a host pid that carries a lock: line, with the locks (fdinfo). */
  fdLocks(pid: number): Array<{ fd: number; lock: string }> {
    const out = this.shOk(`for f in /proc/${pid}/fdinfo/*; do grep -H '^lock:' "$f" 2>/dev/null; done; true`);
    return out.split('\n').filter(Boolean).map((l) => ({ fd: Number(/fdinfo\/(\d+):/.exec(l)?.[1]), lock: l.replace(/^.*?lock:\s*/, '') }));
  }
}

// ---------------------------------------------------------------------------------------------
// Diagnostics: what a user would look at when something failed.

export function diagnostics(namespaces: readonly string[]): string {
  const out: string[] = [];
  const section = (title: string, args: readonly string[]) => {
    const r = kubectl(args, { timeoutMs: 30_000 });
    out.push(`\n===== kubectl ${args.join(' ')} (${title})\n${r.stdout}${r.stderr}`);
  };
  section('nodes', ['get', 'nodes', '-o', 'wide']);
  section('lockmig', ['get', 'all,lease,mutatingwebhookconfiguration', '-n', SYSTEM_NS, '-o', 'wide']);
  section('checkpoints', ['get', 'lockcheckpoints', '-A', '-o', 'wide']);
  section('checkpoints', ['describe', 'lockcheckpoints', '-A']);
  for (const ns of namespaces) {
    section(ns, ['get', 'pods', '-n', ns, '-o', 'wide']);
    section(ns, ['describe', 'pods', '-n', ns]);
    section(ns, ['get', 'events', '-n', ns, '--sort-by=.lastTimestamp']);
    const pods = kubectl(['get', 'pods', '-n', ns, '-o', 'jsonpath={.items[*].metadata.name}']).stdout.split(/\s+/).filter(Boolean);
    for (const p of pods) section(`${ns}/${p}`, ['logs', '-n', ns, p, '--all-containers', '--tail=80']);
  }
  section('events', ['get', 'events', '-n', SYSTEM_NS, '--sort-by=.lastTimestamp']);
  const sys = kubectl(['get', 'pods', '-n', SYSTEM_NS, '-o', 'jsonpath={.items[*].metadata.name}']).stdout.split(/\s+/).filter(Boolean);
  for (const p of sys) {
    section(`component ${p}`, ['logs', '-n', SYSTEM_NS, p, '--all-containers', '--tail=200']);
    section(`component ${p}, previous`, ['logs', '-n', SYSTEM_NS, p, '--all-containers', '--previous', '--tail=50']);
  }
  return out.join('\n');
}

/** Installs the chart as a user would, with only the image values changed. Returns seconds taken. */
export function installChart(): number {
  const at = IMAGES.lockmig.lastIndexOf(':');
  const repoPart = IMAGES.lockmig.slice(0, at);
  const tag = IMAGES.lockmig.slice(at + 1);
  const slash = repoPart.indexOf('/');
  const t0 = Date.now();
  const r = helm(['upgrade', '--install', RELEASE, 'charts/lockmig', '--namespace', SYSTEM_NS, '--create-namespace',
    '--set', `image.registry=${repoPart.slice(0, slash)}`, '--set', `image.repository=${repoPart.slice(slash + 1)}`, '--set', `image.tag=${tag}`,
    '--set', 'image.pullPolicy=IfNotPresent', '--wait', '--timeout', '180s'], { timeoutMs: 240_000 });
  if (r.status !== 0) throw new Error(`helm install failed (${r.status}): ${r.stderr}${r.stdout}`);
  return (Date.now() - t0) / 1000;
}
export function chartInstalled(): boolean {
  return helm(['status', RELEASE, '-n', SYSTEM_NS]).status === 0;
}

/** Runs a command in the background; resolves with its output once it exits. */
export function background(cmd: string, args: readonly string[]): { done: Promise<Run>; kill: () => void } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += String(d); });
  child.stderr.on('data', (d) => { stderr += String(d); });
  const done = new Promise<Run>((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
  return { done, kill: () => child.kill('SIGTERM') };
}
