/**
 * A real control plane for tests: etcd + kube-apiserver from the Kubernetes test binaries
 * (assets.ts), on free loopback ports, in a private temp dir. What controller-runtime's envtest
 * does, written for this suite:
 *
 * ```ts
 * const api = await startApiServer({ users: [{ name: 'alice' }] });
 * const core = api.kubeConfig.makeApiClient(CoreV1Api);          // admin (system:masters)
 * spawn('kubectl', ['--kubeconfig', api.kubeconfigPath, 'get', 'ns']);
 * const alice = api.kubeconfigFor('alice', { namespace: 'team-a' }); // a static token user for RBAC tests
 * await api.restartApiServer();                                  // same etcd, same port, same CA
 * await api.compact();                                           // real etcd compaction (410 for old resourceVersions)
 * await api.stop();                                              // apiserver, then etcd, by PID; temp dir removed
 * ```
 *
 * Authentication: static bearer tokens (`--token-auth-file`): `admin` in `system:masters`, plus the
 * users asked for; ServiceAccount tokens work too (TokenRequest is served by the apiserver itself;
 * see identities.ts). Authorization: RBAC. The serving certificate is the one the apiserver
 * generates for itself (its CA is read from `pki/apiserver.crt`).
 *
 * There is no controller-manager, exactly as in envtest: nothing creates ServiceAccounts or the
 * root-CA ConfigMap in new namespaces, finishes namespace deletion, collects garbage, or runs pods
 * (namespaces.ts creates what the tests need).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { k8sAssets, type K8sAssets } from './assets.js';
import { logTail, pidFileOf, startDaemon, startWatchdog, type Daemon } from './process.js';
import { writeKubeconfig, type Endpoint } from './kubeconfig.js';

export interface StaticUser {
  readonly name: string;
  readonly groups?: readonly string[];
  /** default: random */
  readonly token?: string;
}

export interface ApiServerOptions {
  /**
   * The apiserver's watch cache (default on, as in clusters). Off, every watch is served by etcd,
   * so a resourceVersion older than an etcd compaction answers 410 Gone, which is what tests of
   * relisting need (with the cache on, the cache's own window decides, and it is not controllable).
   */
  readonly watchCache?: boolean;
  /** Extra static-token users (besides `admin`), for RBAC tests. */
  readonly users?: readonly StaticUser[];
  /** More kube-apiserver flags. */
  readonly apiServerArgs?: readonly string[];
  /** Default 90 s: a cold start on 2 busy cores takes 5–10 s. */
  readonly startTimeoutMs?: number;
}

export interface KubeApiServer extends Endpoint {
  /** Private temp dir: etcd data, pki, logs, kubeconfigs. Removed by stop(). */
  readonly dir: string;
  readonly assets: K8sAssets;
  /** `admin` (system:masters). */
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  readonly adminToken: string;
  /** http://127.0.0.1:PORT of etcd (its v3 JSON gateway is at /v3/...). */
  readonly etcdUrl: string;
  /** Kubeconfig of a static user named in `users`. */
  kubeconfigFor(user: string, o?: { namespace?: string }): { kubeConfig: KubeConfig; kubeconfigPath: string; token: string };
  stopApiServer(): Promise<void>;
  startApiServer(): Promise<void>;
  /** Stop and start the apiserver on the same etcd, port and certificate (clients see a real restart). */
  restartApiServer(): Promise<void>;
  /** The current etcd revision (the newest resourceVersion). */
  etcdRevision(): Promise<number>;
  /**
   * Compacts etcd at its current revision (after `bump` throwaway writes outside /registry, so
   * that every resourceVersion a client holds is older): watches resuming from before it get
   * 410 Gone when the watch cache is off. Returns the compacted revision.
   */
  compact(bump?: number): Promise<number>;
  /** Last lines of the apiserver (or etcd) log. */
  logTail(which?: 'apiserver' | 'etcd', lines?: number): string;
  /** Stops the apiserver, then etcd (by PID), and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export class ApiServerStartError extends Error {
  constructor(message: string, readonly log: string) {
    super(`${message}\n--- log tail ---\n${log}`);
    this.name = 'ApiServerStartError';
  }
}

/** A loopback TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function httpJson(method: string, url: string, body?: unknown, o: { ca?: string; token?: string; insecure?: boolean; timeoutMs?: number } = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(o.token ? { authorization: `Bearer ${o.token}` } : {}) },
      ...(u.protocol === 'https:' ? { ca: o.ca, rejectUnauthorized: !o.insecure } : {}),
      timeout: o.timeoutMs ?? 5000, agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Layout {
  readonly dir: string;
  readonly etcdPort: number;
  readonly peerPort: number;
  readonly apiPort: number;
}

function etcdArgs(l: Layout): string[] {
  const client = `http://127.0.0.1:${l.etcdPort}`;
  const peer = `http://127.0.0.1:${l.peerPort}`;
  return [
    '--name', 'envtest', '--data-dir', path.join(l.dir, 'etcd'),
    '--listen-client-urls', client, '--advertise-client-urls', client,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `envtest=${peer}`,
    '--unsafe-no-fsync', '--log-level', 'warn',
  ];
}

function apiServerArgs(l: Layout, o: ApiServerOptions): string[] {
  return [
    '--etcd-servers', `http://127.0.0.1:${l.etcdPort}`,
    '--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1', '--secure-port', String(l.apiPort),
    '--cert-dir', path.join(l.dir, 'pki'),
    '--token-auth-file', path.join(l.dir, 'tokens.csv'),
    '--authorization-mode', 'RBAC',
    '--service-account-issuer', 'https://kubernetes.default.svc',
    '--service-account-key-file', path.join(l.dir, 'sa.pub'),
    '--service-account-signing-key-file', path.join(l.dir, 'sa.key'),
    '--service-cluster-ip-range', '10.0.0.0/24',
    // the chart's agent is a privileged DaemonSet (as on any real cluster that runs it)
    '--allow-privileged=true',
    // the `kubernetes` Service cannot point at a loopback address: do not reconcile its endpoints
    '--endpoint-reconciler-type', 'none',
    // tests compact explicitly (compact()); the default 5 min compaction must not interfere
    '--etcd-compaction-interval', '0',
    `--watch-cache=${o.watchCache ?? true}`,
    '--profiling=false',
    ...(o.apiServerArgs ?? []),
  ];
}

/** Starts etcd + kube-apiserver; rejects with the log tail when they do not become ready. */
export async function startApiServer(o: ApiServerOptions = {}): Promise<KubeApiServer> {
  const assets = k8sAssets();
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(assets, o);
    } catch (err) {
      lastError = err;
      // Free ports are chosen by binding port 0 and closing it: another process may take one in
      // between (other test files start servers in parallel). Only that is retried.
      if (!(err instanceof ApiServerStartError && /address already in use/.test(err.log))) throw err;
    }
  }
  throw lastError;
}

async function startOnce(assets: K8sAssets, o: ApiServerOptions): Promise<KubeApiServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-envtest-'));
  const watchdog = startWatchdog(dir);
  const layout: Layout = { dir, etcdPort: await freePort(), peerPort: await freePort(), apiPort: await freePort() };
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  fs.writeFileSync(path.join(dir, 'sa.key'), privateKey, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'sa.pub'), publicKey);
  const adminToken = randomBytes(24).toString('hex');
  const users = new Map<string, string>([['admin', adminToken]]);
  const lines = [`${adminToken},admin,uid-admin,"system:masters"`];
  for (const u of o.users ?? []) {
    if (users.has(u.name)) throw new Error(`startApiServer: user ${u.name} given twice`);
    const token = u.token ?? randomBytes(24).toString('hex');
    users.set(u.name, token);
    lines.push(`${token},${u.name},uid-${u.name}${u.groups?.length ? `,"${u.groups.join(',')}"` : ''}`);
  }
  fs.writeFileSync(path.join(dir, 'tokens.csv'), `${lines.join('\n')}\n`, { mode: 0o600 });

  const logs = { etcd: path.join(dir, 'etcd.log'), apiserver: path.join(dir, 'kube-apiserver.log') };
  // PID files are named so that the watchdog's glob kills the apiserver before etcd.
  const etcd = startDaemon('etcd', assets.bin.etcd, etcdArgs(layout), { logFile: logs.etcd, pidFile: pidFileOf(dir, '2-etcd') });
  const state: { api?: Daemon; stopped: boolean } = { stopped: false };
  const url = `https://127.0.0.1:${layout.apiPort}`;
  const etcdUrl = `http://127.0.0.1:${layout.etcdPort}`;
  const timeoutMs = o.startTimeoutMs ?? 90_000;

  const waitReady = async (ca?: string): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!etcd.running()) throw new ApiServerStartError(`etcd exited during start-up (${dir})`, logTail(logs.etcd));
      if (!state.api?.running()) throw new ApiServerStartError(`kube-apiserver exited during start-up (${dir})`, `${logTail(logs.apiserver)}\n--- etcd ---\n${logTail(logs.etcd, 5)}`);
      try {
        const r = await httpJson('GET', `${url}/readyz`, undefined, { token: adminToken, ca, insecure: !ca, timeoutMs: 3000 });
        if (r.status === 200 && r.text.trim() === 'ok') return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new ApiServerStartError(`kube-apiserver not ready within ${timeoutMs} ms (${dir})`, logTail(logs.apiserver));
      await sleep(100);
    }
  };
  const launchApi = () => {
    state.api = startDaemon('kube-apiserver', assets.bin['kube-apiserver'], apiServerArgs(layout, o), { logFile: logs.apiserver, pidFile: pidFileOf(dir, '1-kube-apiserver') });
  };

  const stopAll = async () => {
    await state.api?.stop();
    await etcd.stop();
  };
  try {
    launchApi();
    await waitReady();
  } catch (err) {
    await stopAll();
    watchdog.cancel();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  // apiserver.crt holds the serving certificate followed by the CA that signed it.
  const caPem = fs.readFileSync(path.join(dir, 'pki', 'apiserver.crt'), 'utf8');
  const ep: Endpoint = { url, caPem };
  const kubeconfigPath = path.join(dir, 'admin.kubeconfig');
  const kubeConfig = writeKubeconfig(kubeconfigPath, ep, { token: adminToken, user: 'admin' });

  const etcdPost = async (api: string, body: unknown): Promise<Record<string, any>> => {
    const r = await httpJson('POST', `${etcdUrl}${api}`, body);
    if (r.status !== 200) throw new Error(`etcd ${api}: HTTP ${r.status}: ${r.text}`);
    return JSON.parse(r.text) as Record<string, any>;
  };
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const etcdRevision = async () => Number((await etcdPost('/v3/kv/range', { key: b64('/registry/'), range_end: b64('/registry0'), count_only: true })).header.revision);

  const stopApi = async () => { await state.api?.stop(); };
  const startApi = async () => {
    if (state.stopped) throw new Error('startApiServer after stop()');
    if (state.api?.running()) return;
    launchApi();
    await waitReady(caPem);
  };

  return {
    url, caPem, dir, assets, kubeConfig, kubeconfigPath, adminToken, etcdUrl,
    kubeconfigFor(user, ko) {
      const token = users.get(user);
      if (!token) throw new Error(`no static user ${user}: pass it in startApiServer({ users })`);
      const p = path.join(dir, `${user}-${ko?.namespace ?? 'default'}.kubeconfig`);
      return { kubeConfig: writeKubeconfig(p, ep, { token, user, namespace: ko?.namespace }), kubeconfigPath: p, token };
    },
    stopApiServer: stopApi,
    startApiServer: startApi,
    async restartApiServer() {
      await stopApi();
      await startApi();
    },
    etcdRevision,
    async compact(bump = 2) {
      for (let i = 0; i < bump; i++) await etcdPost('/v3/kv/put', { key: b64('/lockmig-envtest/bump'), value: b64(String(Date.now())) });
      const rev = await etcdRevision();
      await etcdPost('/v3/kv/compaction', { revision: String(rev), physical: true });
      return rev;
    },
    logTail: (which = 'apiserver', n = 40) => logTail(which === 'etcd' ? logs.etcd : logs.apiserver, n),
    async stop() {
      if (state.stopped) return;
      state.stopped = true;
      await stopAll();
      watchdog.cancel();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
