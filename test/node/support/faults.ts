/**
 * Fault injection for the fault suite (test/node/faults, `npm run test:faults`):
 *  - components of lockmig killed with SIGKILL from the node (through the inspector's host pid
 *    namespace) and, for the agent, its pod deleted so the DaemonSet recreates it;
 *  - daemons of the kit's node (kube-apiserver, kubelet, containerd) stopped and started again
 *    with the very command line, environment, working directory and log file they had — only on
 *    the kit (LOCKMIG_NODE_KIT_DIR, set by test/node/run.sh); on any other cluster those
 *    scenarios print a SKIPPING banner (and fail under CI);
 *  - an outcome log: every scenario appends one JSON line (fault, moment, outcome, detail) to
 *    fault-outcomes.jsonl; scripts/reliability-table.mjs renders docs/reliability.md from it.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { LockCheckpoint } from '../../../src/api/index.js';
import {
  SYSTEM_NS, chartInstalled, core, getCheckpoint, installChart, kubectl, kubectlOk, sleep, waitFor, type Inspector,
} from './cluster.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const OUTCOMES_FILE = process.env.LOCKMIG_FAULT_OUTCOMES ?? path.join(root, 'fault-outcomes.jsonl');
/** How many times each scenario runs (CI: 1; docs/reliability.md: more). */
export const RUNS = Math.max(1, Number(process.env.LOCKMIG_FAULT_RUNS ?? 1));

/** What a user can rely on after a fault. */
export type Outcome =
  | 'held' // every lock is held by the intended pod, nothing was free
  | 'held after retry' // the operation was retried by lockmig (or the user, after a clear error) and the locks are held
  | 'reported lost' // some locks were free for a while, and lockmig said so (condition + Warning event)
  | 'failed with reason' // the checkpoint ended Failed with a reason; nothing half-done is used later
  | 'refused'; // a hostile or invalid request was refused and the real work went on

export interface FaultRecord {
  readonly fault: string;
  readonly moment: string;
  readonly outcome: Outcome;
  readonly detail: string;
  readonly ms: number;
  readonly at: string;
}

export function record(fault: string, moment: string, outcome: Outcome, detail: string, ms: number): void {
  const r: FaultRecord = { fault, moment, outcome, detail, ms: Math.round(ms), at: new Date().toISOString() };
  fs.appendFileSync(OUTCOMES_FILE, JSON.stringify(r) + '\n');
  console.log(`[fault] ${fault} @ ${moment}: ${outcome} (${Math.round(ms)} ms) — ${detail}`);
}

/** The chart installed, or upgraded to this checkout's (a cluster reused from an earlier run may hold an older release). */
export async function ensureChart(): Promise<void> {
  if (!chartInstalled()) {
    kubectl(['create', 'namespace', SYSTEM_NS]);
    kubectl(['label', 'namespace', SYSTEM_NS, 'pod-security.kubernetes.io/enforce=privileged', '--overwrite']);
  }
  installChart();
  await waitComponentsReady();
}

/** The controller (a leader), the agents and the webhook are all available. */
export async function waitComponentsReady(timeoutMs = 180_000): Promise<void> {
  for (const what of ['deployment/lockmig-controller', 'deployment/lockmig-webhook', 'daemonset/lockmig-agent']) {
    const r = kubectl(['rollout', 'status', '-n', SYSTEM_NS, what, `--timeout=${Math.round(timeoutMs / 1000)}s`], { timeoutMs: timeoutMs + 10_000 });
    if (r.status !== 0) throw new Error(`${what} not ready: ${r.stderr}${r.stdout}`);
  }
  await waitFor('webhook endpoints', () => kubectlOk(['get', 'endpoints', '-n', SYSTEM_NS, 'lockmig-webhook', '-o', 'jsonpath={.subsets[*].addresses[*].ip}']).trim() !== '', timeoutMs);
}

/** The name of a lockmig component's pod on a node (agent) or anywhere (controller, webhook). */
export async function componentPods(component: 'agent' | 'controller' | 'webhook', node?: string): Promise<Array<{ name: string; uid: string; node: string }>> {
  const l = await core.listNamespacedPod({ namespace: SYSTEM_NS, labelSelector: `app.kubernetes.io/component=${component}` });
  return l.items
    .filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === 'Running' && (!node || p.spec?.nodeName === node))
    .map((p) => ({ name: p.metadata!.name!, uid: p.metadata!.uid!, node: p.spec!.nodeName! }));
}

/**
 * SIGKILL every process of a pod (from the node), then delete the pod object at once so its
 * controller (DaemonSet/Deployment) recreates it: "killed and recreated", no graceful shutdown.
 */
export function killPod(insp: Inspector, pod: { name: string; uid: string }): number[] {
  const pids = insp.podPids(pod.uid);
  if (pids.length > 0) insp.sh(`kill -9 ${pids.join(' ')} 2>/dev/null; true`);
  kubectl(['delete', 'pod', '-n', SYSTEM_NS, pod.name, '--grace-period=0', '--force', '--wait=false']);
  return pids;
}

/**
 * Host pids of a pod's processes read from this process's own /proc — only where the suite runs on
 * the node itself (the kit: same pid namespace), so a kill lands within microseconds of a decision
 * instead of the second a `kubectl exec` takes. Undefined elsewhere.
 */
export function localPodPids(uid: string): number[] | undefined {
  if (!KIT_DIR) return undefined;
  const dash = uid.toLowerCase();
  const under = dash.replace(/-/g, '_');
  const pids: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let cg = '';
    try { cg = fs.readFileSync(`/proc/${d}/cgroup`, 'utf8'); } catch { continue; }
    if (cg.includes(`pod${dash}/`) || cg.includes(`pod${under}.slice/`)) {
      // container processes only (their cgroup is named after a 64-hex container id), not the sandbox's pause
      if (/[0-9a-f]{64}/.test(cg)) pids.push(Number(d));
    }
  }
  return pids;
}

/** Prepares an instant SIGKILL of the agent on `node` (kit only; else undefined): call it to kill. */
export async function armAgentKill(node: string): Promise<(() => void) | undefined> {
  const [agent] = await componentPods('agent', node);
  if (!agent) throw new Error(`no running agent pod on ${node}`);
  const pids = localPodPids(agent.uid)?.filter((p) => p !== 0);
  if (!pids || pids.length === 0) return undefined;
  return () => {
    for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    kubectl(['delete', 'pod', '-n', SYSTEM_NS, agent.name, '--grace-period=0', '--force', '--wait=false']);
  };
}

export async function killAgent(insp: Inspector, node: string): Promise<void> {
  const [agent] = await componentPods('agent', node);
  if (!agent) throw new Error(`no running agent pod on ${node}`);
  const pids = killPod(insp, agent);
  expect(pids.length, `processes of agent pod ${agent.name}`).toBeGreaterThan(0);
}
export async function waitAgentBack(node: string): Promise<void> {
  await waitFor(`a new agent pod Ready on ${node}`, async () => {
    const l = await core.listNamespacedPod({ namespace: SYSTEM_NS, labelSelector: 'app.kubernetes.io/component=agent' });
    return l.items.some((p) => p.spec?.nodeName === node && !p.metadata?.deletionTimestamp
      && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
  }, 120_000, 500);
}

/** The controller replica holding the leader Lease (holderIdentity starts with the pod name). */
export async function leader(): Promise<{ name: string; uid: string; holder: string }> {
  return waitFor('a controller leader', async () => {
    const holder = kubectl(['get', 'lease', '-n', SYSTEM_NS, '-o', 'jsonpath={.items[*].spec.holderIdentity}']).stdout.trim().split(/\s+/).filter(Boolean);
    const pods = await componentPods('controller');
    const p = pods.find((x) => holder.some((h) => h.startsWith(x.name)));
    return p ? { ...p, holder: holder.find((h) => h.startsWith(p.name))! } : undefined;
  }, 90_000, 500);
}

// ---------------------------------------------------------------------------------------------
// The kit's daemons

export const KIT_DIR = process.env.LOCKMIG_NODE_KIT_DIR;

export function needKit(what: string): boolean {
  if (KIT_DIR && fs.existsSync(path.join(KIT_DIR, 'kube-apiserver.pid'))) return true;
  console.error(`\n!!!!!!!! SKIPPING "${what}": restarting cluster daemons needs the node kit (test/node/run.sh sets LOCKMIG_NODE_KIT_DIR) — this test did NOT run !!!!!!!!\n`);
  if (process.env.CI) throw new Error(`CI must run "${what}" on the kit`);
  return false;
}

interface Daemon { pid: number; argv: string[]; env: NodeJS.ProcessEnv; cwd: string; log: string }

function readDaemon(pidFile: string): Daemon {
  const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
  const env: NodeJS.ProcessEnv = {};
  for (const kv of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean)) {
    const at = kv.indexOf('=');
    env[kv.slice(0, at)] = kv.slice(at + 1);
  }
  return { pid, argv, env, cwd: fs.readlinkSync(`/proc/${pid}/cwd`), log: fs.readlinkSync(`/proc/${pid}/fd/1`) };
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

/**
 * Stops a daemon of the kit (SIGTERM, or SIGKILL with `hard`), keeps it down for `downMs`, then
 * starts it again exactly as it ran (argv, environment, cwd, same log file, own session) and
 * records the new pid in its pid file, where node-down.sh finds it.
 */
export async function restartDaemon(name: 'kube-apiserver' | 'kubelet' | 'containerd', opts: { hard?: boolean; downMs?: number } = {}): Promise<{ downMs: number }> {
  const pidFile = path.join(KIT_DIR!, `${name}.pid`);
  const d = readDaemon(pidFile);
  const t0 = Date.now();
  process.kill(d.pid, opts.hard ? 'SIGKILL' : 'SIGTERM');
  // a graceful stop may wait for long-running requests (kube-apiserver drains its watches for up
  // to a minute): after 10 s it is killed, as an operator's restart would
  try {
    await waitFor(`${name} (pid ${d.pid}) stopped`, () => !alive(d.pid), 10_000, 100);
  } catch {
    process.kill(d.pid, 'SIGKILL');
    await waitFor(`${name} (pid ${d.pid}) killed`, () => !alive(d.pid), 30_000, 100);
  }
  await sleep(opts.downMs ?? 2000);
  const out = fs.openSync(d.log, 'a');
  fs.writeSync(out, `\n==== lockmig fault suite: ${name} restarted at ${new Date().toISOString()} ====\n`);
  const child = spawn(d.argv[0]!, d.argv.slice(1), { cwd: d.cwd, env: d.env, detached: true, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  if (!child.pid) throw new Error(`could not start ${name} again`);
  child.unref();
  fs.writeFileSync(pidFile, `${child.pid}\n`);
  return { downMs: Date.now() - t0 };
}

export async function waitApiServer(): Promise<void> {
  await waitFor('kube-apiserver /readyz', () => kubectl(['get', '--raw', '/readyz'], { timeoutMs: 10_000 }).status === 0, 120_000, 500);
}
export async function waitNodeReady(node: string): Promise<void> {
  await waitFor(`node ${node} Ready`, async () => {
    const n = await core.readNode({ name: node });
    return n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  }, 120_000, 500);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint outcomes

export const TERMINAL = ['Dumped', 'HandoverReady', 'Restored', 'Failed'] as const;

/** Waits until the checkpoint reaches one of `phases` — never stuck: the timeout is the assertion. */
export async function settle(ns: string, name: string, phases: readonly string[] = TERMINAL, timeoutMs = 180_000): Promise<LockCheckpoint> {
  return waitFor(`lockcheckpoint ${ns}/${name} in ${phases.join('|')}`, async () => {
    const c = await getCheckpoint(ns, name);
    return c && phases.includes(c.status?.phase ?? '') ? c : undefined;
  }, timeoutMs, 250);
}

export function condition(c: LockCheckpoint | undefined, type: string): { status: string; reason: string; message?: string } | undefined {
  return c?.status?.conditions?.find((x) => x.type === type) as { status: string; reason: string; message?: string } | undefined;
}

/** Warning events about a checkpoint, as `kubectl describe` shows them: "Reason: message" lines. */
export function warnings(ns: string, name: string): string[] {
  const r = kubectl(['get', 'events', '-n', ns, '--field-selector', `involvedObject.kind=LockCheckpoint,involvedObject.name=${name},type=Warning`,
    '-o', 'jsonpath={range .items[*]}{.reason}: {.message}{"\\n"}{end}']);
  return r.stdout.split('\n').filter(Boolean);
}
