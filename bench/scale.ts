/**
 * Scale benchmark (issue 10, last goal): the REAL controller and the REAL agent, each its own
 * `node dist/src/cli/main.js …` process as a cluster runs them, against a real etcd +
 * kube-apiserver (test/support/envtest), with 50 source pods on one node whose containers are real
 * processes in kubelet-named cgroups holding real locks (test/agent/support/virtual-pods.ts; the
 * workload is test/node/images/workload/holder.py: a POSIX, a flock and an OFD lock each).
 *
 *  1. idle: both processes ready, nothing to do — their RSS is the baseline of the RSS rows;
 *  2. one checkpoint at a time (LOCKMIG_SCALE_SINGLES, default 3, on a pod of its own): creation →
 *     phase Dumped/HandoverReady, the baseline of the latency rows;
 *  3. 500 LockCheckpoints created at once (all create requests in flight together), 10 per source
 *     pod, storage api and nodeLocal alternating, restore mode the default (Auto: the agent's vault
 *     takes the OFD/flock descriptions, phase HandoverReady): per checkpoint creation → phase
 *     Dumped/HandoverReady as this bench's own watch sees it (ms clock), p50/p95/p99/max, and how many
 *     are neither done nor Failed after LOCKMIG_SCALE_BOUND_S (default 300) seconds: stuck (they
 *     count as infinitely late in the percentiles);
 *  4. one more source pod whose process holds 10,000 fds and 2,000 locks (bench/common.ts's holder),
 *     one checkpoint of it: the agent's RSS while it dumps and stores it (api storage: ConfigMaps).
 *
 * "Creation" is the earlier of the create request's answer and the watch's ADDED event (the object
 * exists by then; the API's creationTimestamp has second granularity). The controller's and the
 * agent's RSS are sampled every 100 ms from /proc/<pid>/status; the peak is the kernel's VmHWM.
 * Both run with their defaults (controller: 2 workers; agent: 2 workers), as the admin user;
 * LOCKMIG_SCALE_CONTROLLER_ARGS / LOCKMIG_SCALE_AGENT_ARGS add flags, LOCKMIG_SCALE_CLI runs
 * another build's dist/src/cli/main.js (A/B). The API server's own request counters give the
 * writes each checkpoint cost, and the 500 creates alone give its pace in the same run.
 *
 * Needs root (cgroups, the agent reads /proc/<pid>/fdinfo of other processes), python3, a cgroup2
 * mount and the Kubernetes test binaries (KUBEBUILDER_ASSETS, else ../shared/k8s/assets.sh).
 * Run alone: node dist/bench/scale.js (prints JSON). bench/run.ts calls benchScale().
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { CoreV1Api, CustomObjectsApi, KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION } from '../src/api/index.js';
import { ResilientInformer } from '../src/kube/informer.js';
import { shareConnections } from '../src/kube/connections.js';
import { realClock } from '../src/kube/clock.js';
import { silentLogger } from '../src/log/logger.js';
import { freePort, installCrd, startApiServer, type KubeApiServer } from '../test/support/envtest/index.js';
import { pidFileOf, startDaemon, type Daemon } from '../test/support/envtest/process.js';
import {
  KubeletCgroups, containerID, createRunningPod, setupNamespaceAndNode, type Cluster,
} from '../test/agent/support/virtual-pods.js';
import { lockHolderArgv, median, round1, round2, type BenchResult } from './common.js';

/** The lockmig CLI the controller and agent run from (LOCKMIG_SCALE_CLI: another build, for an A/B comparison). */
const CLI = process.env.LOCKMIG_SCALE_CLI ?? fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** The checkout: the directory above dist/ (this file runs as dist/bench/scale.js). */
function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(d, 'crds', 'lockmig.dev_lockcheckpoints.yaml'))) return d;
    d = path.dirname(d);
  }
  throw new Error('scale bench: cannot find the checkout (crds/lockmig.dev_lockcheckpoints.yaml) above dist/bench');
}

/** KUBEBUILDER_ASSETS, else the kit beside the checkout (../shared/k8s/assets.sh prints its directory). */
function ensureAssets(root: string): void {
  if (process.env.KUBEBUILDER_ASSETS) return;
  const kit = path.resolve(root, '..', 'shared', 'k8s', 'assets.sh');
  if (!fs.existsSync(kit)) throw new Error('the Kubernetes test binaries are needed: set KUBEBUILDER_ASSETS (etcd, kube-apiserver, kubectl), or have ../shared/k8s/assets.sh');
  const r = spawnSync('bash', [kit], { encoding: 'utf8', timeout: 180_000 });
  const dir = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !dir) throw new Error(`${kit} failed (exit ${r.status ?? r.signal}): ${r.stderr.trim().slice(-300)}`);
  process.env.KUBEBUILDER_ASSETS = dir;
}

function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timed out`)));
    req.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve().then(fn).catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`scale bench: timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** VmRSS and VmHWM of a process, in MB (undefined once it is gone). */
function memoryOf(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** RSS samples of a process every `everyMs`; `max(from, to)` is the largest sample in a window. */
class RssSampler {
  private readonly samples: Array<[number, number]> = [];
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly pid: number, everyMs = 100) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }
  sample(): number | undefined {
    const m = memoryOf(this.pid);
    if (m) this.samples.push([performance.now(), m.rss]);
    return m?.rss;
  }
  max(from = 0, to = Infinity): number {
    let best = NaN;
    for (const [t, v] of this.samples) if (t >= from && t <= to && !(v <= best)) best = v;
    return best;
  }
  hwm(): number { return memoryOf(this.pid)?.hwm ?? NaN; }
  stop(): void { clearInterval(this.timer); }
}

/** The value of one Prometheus sample line (`name{labels} value`), summed over matching lines. */
function promSum(text: string, name: string, labelFilter = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line.startsWith('#')) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (labelFilter && !rest.includes(labelFilter)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** The API server's request counters (apiserver_request_total), summed by verb and resource[/subresource]. */
function apiRequests(api: KubeApiServer): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${api.url}/metrics`, { ca: api.caPem, headers: { authorization: `Bearer ${api.adminToken}` }, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const out = new Map<string, number>();
        for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) {
          if (!line.startsWith('apiserver_request_total{')) continue;
          const label = (k: string) => new RegExp(`[{,]${k}="([^"]*)"`).exec(line)?.[1] ?? '';
          const key = `${label('verb')} ${label('resource')}${label('subresource') ? `/${label('subresource')}` : ''}`;
          out.set(key, (out.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
        }
        resolve(out);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('GET /metrics: timed out')));
    req.on('error', reject);
  });
}

const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY']);

/** Requests between two snapshots: writes by kind, and the total of writes. */
function requestDelta(a: Map<string, number>, b: Map<string, number>): { writes: number; byKind: Array<[string, number]> } {
  const byKind: Array<[string, number]> = [];
  let writes = 0;
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d <= 0 || !WRITES.has(k.split(' ')[0]!)) continue;
    writes += d;
    byKind.push([k, d]);
  }
  return { writes, byKind: byKind.sort((x, y) => y[1] - x[1]) };
}

const percentile = (sorted: readonly number[], p: number): number => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!);

type Stage = 'seen' | 'dispatched' | 'agentDumping' | 'agentDone' | 'done' | 'failed';

interface Track {
  sentAt?: number;
  ackAt?: number;
  createRetries: number;
  at: Partial<Record<Stage, number>>;
  failure?: string;
}

/** The bench's own watch: when each stage of each checkpoint was first seen (ms clock). */
class Tracker {
  readonly t = new Map<string, Track>();
  private readonly informer: ResilientInformer<KubernetesObject>;

  constructor(kc: Cluster['kc'], custom: CustomObjectsApi, namespace: string) {
    this.informer = new ResilientInformer<KubernetesObject>({
      kubeConfig: kc, path: `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`,
      list: async () => (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace })) as KubernetesListObject<KubernetesObject>,
      clock: realClock, logger: silentLogger(), name: 'bench-lockcheckpoints',
    });
    const see = (o: KubernetesObject) => this.see(o);
    this.informer.on('add', see);
    this.informer.on('update', see);
  }

  get(name: string): Track {
    let x = this.t.get(name);
    if (!x) this.t.set(name, (x = { createRetries: 0, at: {} }));
    return x;
  }

  private see(o: KubernetesObject): void {
    const now = performance.now();
    const x = this.get(o.metadata!.name!);
    const st = (o as { status?: { phase?: string; message?: string; agent?: { state?: string } } }).status;
    const mark = (s: Stage) => { x.at[s] ??= now; };
    mark('seen');
    if (st?.phase && st.phase !== 'Pending') mark('dispatched');
    if (st?.agent?.state) mark('agentDumping');
    if (st?.agent?.state === 'Dumped' || st?.agent?.state === 'HandoverReady') mark('agentDone');
    if (st?.phase === 'Dumped' || st?.phase === 'HandoverReady') mark('done');
    if (st?.phase === 'Failed') { mark('failed'); x.failure ??= st.message ?? '(no message)'; }
  }

  /** Creation: the earlier of the create's answer and the watch's ADDED. */
  created(x: Track): number | undefined {
    const c = [x.ackAt, x.at.seen].filter((v): v is number => v !== undefined);
    return c.length ? Math.min(...c) : undefined;
  }

  start(): Promise<void> { return this.informer.start().then(() => this.informer.waitForSync()); }
  stop(): Promise<void> { return this.informer.stop(); }
}

interface Proc { readonly daemon: Daemon; readonly health: string; readonly metrics: string; readonly rss: RssSampler }

async function startRole(role: 'controller' | 'agent', api: KubeApiServer, args: readonly string[], logDir: string): Promise<Proc> {
  const hp = await freePort();
  const mp = await freePort();
  const daemon = startDaemon(role, process.execPath, [
    CLI, role, '--kubeconfig', api.kubeconfigPath, '--health-addr', `127.0.0.1:${hp}`, '--metrics-addr', `127.0.0.1:${mp}`, ...args,
  ], { logFile: path.join(logDir, `${role}.log`), pidFile: pidFileOf(api.dir, `0-${role}`) });
  const p = { daemon, health: `http://127.0.0.1:${hp}`, metrics: `http://127.0.0.1:${mp}/metrics`, rss: new RssSampler(daemon.pid) };
  await waitFor(`the ${role} to be ready (log: ${daemon.logFile})`, async () => {
    if (!daemon.running()) throw new Error('exited');
    return (await httpGet(`${p.health}/readyz`)).status === 200 ? true : undefined;
  }, 60_000, 100).catch((e: unknown) => {
    const tail = fs.existsSync(daemon.logFile) ? fs.readFileSync(daemon.logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
    throw new Error(`${(e as Error).message}${daemon.running() ? '' : ' (it exited)'}\n${tail}`);
  });
  return p;
}

export interface ScaleOptions {
  readonly checkpoints?: number;
  readonly pods?: number;
  readonly singles?: number;
  readonly boundSeconds?: number;
  readonly bigFiles?: number;
  readonly bigLocks?: number;
}

const envInt = (k: string, d: number): number => {
  const n = Number(process.env[k]);
  return Number.isInteger(n) && n > 0 ? n : d;
};

export async function benchScale(opts: ScaleOptions = {}): Promise<BenchResult[]> {
  const N = opts.checkpoints ?? envInt('LOCKMIG_SCALE_CHECKPOINTS', 500);
  const P = opts.pods ?? envInt('LOCKMIG_SCALE_PODS', 50);
  const singles = opts.singles ?? envInt('LOCKMIG_SCALE_SINGLES', 3);
  const boundMs = (opts.boundSeconds ?? envInt('LOCKMIG_SCALE_BOUND_S', 300)) * 1000;
  const bigFiles = opts.bigFiles ?? 10_000;
  const bigLocks = opts.bigLocks ?? 2_000;
  if (process.getuid?.() !== 0) throw new Error('the scale bench needs root (kubelet-named cgroups; the agent reads other processes\' /proc/<pid>/fdinfo)');
  if (spawnSync('python3', ['-c', '0']).status !== 0) throw new Error('the scale bench needs python3 (the source pods\' workload)');
  const root = repoRoot();
  ensureAssets(root);
  const holderPy = path.join(root, 'test', 'node', 'images', 'workload', 'holder.py');

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-bench-scale-'));
  const logDir = path.join(work, 'logs');
  fs.mkdirSync(logDir);
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const log = (m: string) => process.stderr.write(`scale bench: ${m}\n`);
  try {
    let t = performance.now();
    const api = await startApiServer();
    cleanups.push(() => api.stop());
    await installCrd(api, path.join(root, 'crds', 'lockmig.dev_lockcheckpoints.yaml'));
    log(`API server ready and CRD installed in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const kc = api.kubeConfig;
    const custom = kc.makeApiClient(CustomObjectsApi);
    const cluster: Cluster = { kc, kubeConfig: kc, kubeconfigPath: api.kubeconfigPath, dir: api.dir, core: kc.makeApiClient(CoreV1Api), custom, close: () => api.stop() };
    const env = await setupNamespaceAndNode(cluster, 'scale');
    const ns = env.namespace;
    const cgroups = new KubeletCgroups('bench-scale');
    cleanups.push(() => cgroups.cleanup());

    // The source pods: one container each, python3 holder.py holding a POSIX, a flock and an OFD lock.
    const startPod = async (name: string, argv: (dataDir: string) => string[]): Promise<void> => {
      const id = containerID();
      const pod = await createRunningPod(cluster, {
        apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns },
        spec: { nodeName: env.node, containers: [{ name: 'app', image: 'example/app', command: ['python3'] }] },
      }, { app: id });
      const data = path.join(work, 'data', name);
      fs.mkdirSync(data, { recursive: true });
      await cgroups.start(cgroups.container({ podUID: pod.metadata!.uid!, containerID: id }), argv(data), process.env, 180_000);
    };
    const holder = (d: string) => ['python3', holderPy, '--posix', `${d}/posix.lock`, '--flock', `${d}/flock.lock`, '--ofd', `${d}/ofd.lock`];
    t = performance.now();
    const podNames = Array.from({ length: P }, (_, i) => `src-${i}`);
    for (let i = 0; i < podNames.length; i += 10) await Promise.all(podNames.slice(i, i + 10).map((n) => startPod(n, holder)));
    await startPod('solo-0', holder);
    log(`${P + 1} source pods running (${((performance.now() - t) / 1000).toFixed(1)} s)`);

    const tracker = new Tracker(kc, custom, ns);
    await tracker.start();
    cleanups.push(() => tracker.stop());

    const extra = (k: string) => (process.env[k] ?? '').split(/\s+/).filter(Boolean);
    const controller = await startRole('controller', api, extra('LOCKMIG_SCALE_CONTROLLER_ARGS'), logDir);
    cleanups.push(() => { controller.rss.stop(); return controller.daemon.stop(); });
    fs.mkdirSync(path.join(work, 'run'), { recursive: true });
    const agent = await startRole('agent', api, [
      '--node', env.node, '--storage-root', path.join(work, 'store'), '--vault-socket', path.join(work, 'run', 'vault.sock'), '--shim-dir', 'none',
      ...extra('LOCKMIG_SCALE_AGENT_ARGS'),
    ], logDir);
    cleanups.push(() => { agent.rss.stop(); return agent.daemon.stop(); });
    await sleep(2000);
    const idle = { controller: controller.rss.sample() ?? NaN, agent: agent.rss.sample() ?? NaN };
    log(`controller and agent ready; idle RSS controller ${idle.controller.toFixed(1)} MB, agent ${idle.agent.toFixed(1)} MB`);

    // The load: every create request in flight together, over at most 32 reused connections (what
    // a client multiplexing over HTTP/2 does; 500 fresh TLS handshakes would be the bench's own cost).
    const loadKc = new KubeConfig();
    loadKc.loadFromFile(api.kubeconfigPath);
    const load = shareConnections(loadKc, { maxSockets: 32 }).makeApiClient(CustomObjectsApi);
    const create = async (name: string, pod: string, storage: Record<string, unknown>): Promise<void> => {
      const x = tracker.get(name);
      x.sentAt = performance.now();
      for (;;) {
        try {
          await load.createNamespacedCustomObject({
            group: GROUP, version: VERSION, namespace: ns, plural: PLURAL,
            body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name, namespace: ns }, spec: { sourcePodName: pod, storage } },
          });
          x.ackAt = performance.now();
          return;
        } catch (err) {
          const code = (err as { code?: number }).code;
          // the API server's flow control may turn a burst away (429): the client tries again, as kubectl would
          if ((code === 429 || (code !== undefined && code >= 500)) && x.createRetries < 20) { x.createRetries++; await sleep(200); continue; }
          throw err;
        }
      }
    };
    const latency = (name: string): number | undefined => {
      const x = tracker.get(name);
      const c = tracker.created(x);
      return c !== undefined && x.at.done !== undefined ? x.at.done - c : undefined;
    };

    // 2. the baseline: one checkpoint at a time
    const single: number[] = [];
    for (let i = 0; i < singles; i++) {
      const name = `single-${i}`;
      await create(name, 'solo-0', i % 2 === 0 ? { api: {} } : { nodeLocal: {} });
      await waitFor(`${name} to be dumped`, () => {
        const x = tracker.get(name);
        if (x.at.failed !== undefined) throw new Error(`${name} failed: ${x.failure}`);
        return latency(name);
      }, 60_000, 5).catch((e: unknown) => { throw new Error(`${(e as Error).message}; last stages ${JSON.stringify(tracker.get(name).at)}`); });
      single.push(latency(name)!);
    }
    const base = median(single);
    log(`one checkpoint alone: creation → Dumped ${single.map((x) => x.toFixed(0)).join('/')} ms`);

    // 3. N at once
    const reqBefore = await apiRequests(api);
    const names = Array.from({ length: N }, (_, i) => `ck-${i % P}-${Math.floor(i / P)}`);
    const burstStart = performance.now();
    const creates = await Promise.allSettled(names.map((n, i) => create(n, `src-${i % P}`, i % 2 === 0 ? { api: {} } : { nodeLocal: {} })));
    const createFailures = creates.filter((c) => c.status === 'rejected') as PromiseRejectedResult[];
    if (createFailures.length > 0) throw new Error(`${createFailures.length} of ${N} creates failed: ${(createFailures[0]!.reason as Error).message}`);
    const createdAll = performance.now();
    log(`${N} LockCheckpoints created in ${(createdAll - burstStart).toFixed(0)} ms (${names.reduce((a, n) => a + tracker.get(n).createRetries, 0)} retries)`);
    const finished = (n: string) => tracker.get(n).at.done !== undefined || tracker.get(n).at.failed !== undefined;
    let lastReport = performance.now();
    while (performance.now() - createdAll < boundMs && !names.every(finished)) {
      await sleep(50);
      if (performance.now() - lastReport > 5000) { lastReport = performance.now(); log(`${names.filter(finished).length}/${N} done after ${((lastReport - burstStart) / 1000).toFixed(0)} s`); }
    }
    const allDoneAt = performance.now();
    const reqs = requestDelta(reqBefore, await apiRequests(api));
    // the API server's own pace, same run: the 500 creates alone (every one in flight at once)
    const createRate = N / ((createdAll - burstStart) / 1000);
    const perCk = reqs.writes / N;
    const apiNote = `API writes during the burst: ${reqs.writes} (${perCk.toFixed(1)} per checkpoint: ${reqs.byKind.slice(0, 6).map(([k, v]) => `${k} ${(v / N).toFixed(1)}`).join(', ')}); the API server stored the ${N} creates alone at ${createRate.toFixed(0)}/s, at which pace ${reqs.writes} writes take ≥ ${(reqs.writes / createRate).toFixed(1)} s`;
    log(apiNote);
    // a checkpoint that never got there counts as infinitely late: a percentile it reaches is "not within the bound"
    const lat = names.map((n) => latency(n) ?? Infinity).sort((a, b) => a - b);
    const failed = names.filter((n) => tracker.get(n).at.failed !== undefined);
    const stuck = names.filter((n) => !finished(n));
    const p50 = percentile(lat, 0.5);
    const p95 = percentile(lat, 0.95);
    const p99 = percentile(lat, 0.99);
    const max = lat[lat.length - 1]!;
    // where the time goes: medians / p99 of each step, from the watch
    const step = (a: Stage | 'created', b: Stage) => names.map((n) => {
      const x = tracker.get(n);
      const from = a === 'created' ? tracker.created(x) : x.at[a];
      return from !== undefined && x.at[b] !== undefined ? x.at[b]! - from : undefined;
    }).filter((v): v is number => v !== undefined).sort((p, q) => p - q);
    const steps = ([['created', 'dispatched', 'controller dispatch'], ['dispatched', 'agentDumping', 'agent start'], ['agentDumping', 'agentDone', 'agent dump+report'], ['agentDone', 'done', 'controller phase']] as const)
      .map(([a, b, label]) => { const s = step(a, b); return `${label} p50 ${percentile(s, 0.5).toFixed(0)} / p99 ${percentile(s, 0.99).toFixed(0)} ms`; }).join('; ');
    log(`burst: p50 ${p50.toFixed(0)} ms, p95 ${p95.toFixed(0)}, p99 ${p99.toFixed(0)}, max ${max.toFixed(0)}; ${failed.length} failed, ${stuck.length} stuck; ${steps}`);
    if (failed.length) log(`first failure: ${failed[0]}: ${tracker.get(failed[0]!).failure}`);
    const burstWindow = { from: burstStart, to: allDoneAt };
    const ctlBurstRss = controller.rss.max(burstWindow.from, burstWindow.to);
    const agentBurstRss = agent.rss.max(burstWindow.from, burstWindow.to);

    const cm = await httpGet(controller.metrics).then((r) => r.text, () => '');
    const am = await httpGet(agent.metrics).then((r) => r.text, () => '');
    const reconciles = promSum(cm, 'lockmig_controller_reconciles_total');
    const conflicts = promSum(cm, 'lockmig_controller_reconciles_total', 'result="conflict"');
    const errors = promSum(cm, 'lockmig_controller_reconciles_total', 'result="error"');
    const dumps = promSum(am, 'lockmig_agent_dumps_total');
    const dumpSec = promSum(am, 'lockmig_agent_dump_duration_seconds_sum');
    const diag = `controller ${reconciles} reconciles (${conflicts} conflicts, ${errors} errors); agent ${dumps} dumps, mean ${(dumpSec / Math.max(1, dumps) * 1000).toFixed(1)} ms each`;
    log(diag);

    // 4. the agent dumping a process with 10,000 fds and 2,000 locks
    t = performance.now();
    await startPod('big-0', (d) => lockHolderArgv(d, bigFiles, bigLocks, 200));
    log(`big-0 holds ${bigFiles} fds / ${bigLocks} locks (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    const bigFrom = performance.now();
    await create('big', 'big-0', { api: {} });
    await waitFor('the 10,000-fd checkpoint', () => {
      const x = tracker.get('big');
      if (x.at.failed !== undefined) throw new Error(`big failed: ${x.failure}`);
      return x.at.done;
    }, 120_000, 20);
    const bigTo = performance.now();
    agent.rss.sample();
    const bigLatency = latency('big')!;
    const bigStatus = (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name: 'big' })) as { status?: { agent?: { dumpMilliseconds?: number; locks?: { total?: number } } } };
    const agentDumpRss = agent.rss.max(bigFrom, bigTo);
    const agentHwm = agent.rss.hwm();
    const ctlHwm = controller.rss.hwm();
    log(`big: creation → Dumped ${bigLatency.toFixed(0)} ms (dump ${bigStatus.status?.agent?.dumpMilliseconds} ms, ${bigStatus.status?.agent?.locks?.total} locks); agent RSS during it ${agentDumpRss.toFixed(1)} MB, VmHWM ${agentHwm.toFixed(1)} MB; controller VmHWM ${ctlHwm.toFixed(1)} MB`);

    const what = `${N} LockCheckpoints created at once, ${N / P} per source pod, ${P} pods on one node (storage api/nodeLocal alternating, restore mode Auto)`;
    const bad = stuck.length + failed.length;
    return [
      {
        name: `scale: creation → Dumped, p50 of ${N}`, baseline: '1 checkpoint alone', baselineMs: round1(base), ms: round1(p50), ratio: round2(p50 / base),
        goal: { text: '< 1000 ms', met: p50 < 1000 },
        notes: `${what}; baseline median of ${singles}: ${single.map((x) => x.toFixed(0)).join('/')} ms; all created in ${(createdAll - burstStart).toFixed(0)} ms`,
      },
      {
        name: `scale: creation → Dumped, p99 of ${N}`, baseline: '1 checkpoint alone', baselineMs: round1(base), ms: round1(p99), ratio: round2(p99 / base),
        goal: { text: '< 5000 ms', met: p99 < 5000 },
        notes: `p95 ${p95.toFixed(0)} ms, max ${max.toFixed(0)} ms (Infinity: not done within ${boundMs / 1000} s); ${steps}; ${diag}; ${apiNote}`,
      },
      {
        name: `scale: stuck or failed after ${boundMs / 1000} s`, baseline: '', baselineMs: NaN, ms: bad, ratio: NaN, unit: ` of ${N}`,
        goal: { text: '= 0', met: bad === 0 },
        notes: `${stuck.length} stuck${stuck.length ? ` (e.g. ${stuck.slice(0, 3).join(', ')})` : ''}, ${failed.length} failed${failed.length ? ` (${failed[0]}: ${tracker.get(failed[0]!).failure})` : ''}`,
      },
      {
        name: 'scale: controller peak RSS', baseline: 'controller idle', baselineMs: round1(idle.controller), ms: round1(ctlHwm), ratio: round2(ctlHwm / idle.controller), unit: ' MB',
        goal: { text: '< 150 MB', met: ctlHwm < 150 },
        notes: `VmHWM over the whole run (${N + singles + 1} checkpoints, ${P + 2} pods watched); largest 100 ms sample during the burst ${ctlBurstRss.toFixed(1)} MB`,
      },
      {
        name: `scale: agent RSS dumping ${bigFiles.toLocaleString('en')} fds`, baseline: 'agent idle', baselineMs: round1(idle.agent), ms: round1(agentHwm), ratio: round2(agentHwm / idle.agent), unit: ' MB',
        goal: { text: '< 200 MB', met: agentHwm < 200 },
        notes: `VmHWM over the whole run, after the burst and the ${bigLocks}-lock dump (api storage, ${bigStatus.status?.agent?.dumpMilliseconds} ms dump, creation → Dumped ${bigLatency.toFixed(0)} ms); largest sample during that dump ${agentDumpRss.toFixed(1)} MB, during the burst ${agentBurstRss.toFixed(1)} MB`,
      },
      {
        name: 'scale: 10,000-fd checkpoint, creation → Dumped', baseline: '1 checkpoint alone', baselineMs: round1(base), ms: round1(bigLatency), ratio: round2(bigLatency / base),
        notes: `${bigStatus.status?.agent?.locks?.total} locks recorded; the holder is bench/common.ts's (10,000 fds, 2,000 locks, 200 dup'ed)`,
      },
    ];
  } finally {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch (e) { process.stderr.write(`scale bench cleanup: ${(e as Error).message}\n`); }
    }
    if (process.env.LOCKMIG_SCALE_KEEP) process.stderr.write(`scale bench: kept ${work}\n`);
    else fs.rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchScale().then((r) => { process.stdout.write(`${JSON.stringify(r, null, 2)}\n`); }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
