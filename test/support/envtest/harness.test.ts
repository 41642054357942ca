/**
 * The harness itself, checked against the real binaries: RBAC with static users and
 * ServiceAccount tokens, a restart that keeps data and certificate, a real 410 after an etcd
 * compaction, the fault proxy, and no process or directory left behind — also when the test
 * process is killed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api, RbacAuthorizationV1Api, Watch } from '@kubernetes/client-node';
import { REPO_ROOT, missing } from '../../helpers/env.js';
import { createTestNamespace, kubectl, serviceAccountKubeconfig, startApiServer, startFaultProxy, type KubeApiServer } from './index.js';

const skip = missing({ k8s: true }, 'envtest harness');

const gone = (pid: number): boolean => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return / Z /.test(stat.slice(stat.lastIndexOf(')')));
  } catch {
    return true;
  }
};

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(skip)('envtest harness', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await startApiServer({ watchCache: false, users: [{ name: 'alice' }, { name: 'viewer', groups: ['viewers'] }] });
  });
  afterAll(async () => {
    await api?.stop();
  });

  it('admin is system:masters; a static user has exactly what RBAC grants (a Role in one namespace)', async () => {
    const a = await createTestNamespace(api.kubeConfig, { prefix: 'team-a' });
    const b = await createTestNamespace(api.kubeConfig, { prefix: 'team-b' });
    const rbac = api.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await rbac.createNamespacedRole({ namespace: a.name, body: { metadata: { name: 'cm-reader' }, rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }] } });
    await rbac.createNamespacedRoleBinding({ namespace: a.name, body: { metadata: { name: 'alice' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'cm-reader' }, subjects: [{ kind: 'User', name: 'alice', apiGroup: 'rbac.authorization.k8s.io' }] } });
    const alice = api.kubeconfigFor('alice').kubeConfig.makeApiClient(CoreV1Api);
    await expect(alice.listNamespacedConfigMap({ namespace: a.name })).resolves.toMatchObject({ items: [] });
    await expect(alice.listNamespacedConfigMap({ namespace: b.name })).rejects.toMatchObject({ code: 403 });
    await expect(alice.createNamespacedConfigMap({ namespace: a.name, body: { metadata: { name: 'x' } } })).rejects.toMatchObject({ code: 403 });
    const can = await kubectl(['auth', 'can-i', 'list', 'configmaps', '-n', a.name, '--as', 'alice'], { kubeconfig: api.kubeconfigPath });
    expect(can.stdout.trim()).toBe('yes');
    const who = await kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username} {.status.userInfo.groups}'], { kubeconfig: api.kubeconfigFor('viewer').kubeconfigPath });
    expect(who.stdout).toContain('viewer');
    expect(who.stdout).toContain('viewers');
  });

  it('ServiceAccount tokens come from the TokenRequest API and authenticate as the ServiceAccount', async () => {
    const ns = await createTestNamespace(api.kubeConfig, { prefix: 'sa' });
    const id = await serviceAccountKubeconfig(api.kubeConfig, path.join(api.dir, 'ids'), ns.name, 'robot');
    const who = await kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'], { kubeconfig: id.kubeconfigPath });
    expect(who.stdout).toBe(`system:serviceaccount:${ns.name}:robot`);
    await expect(id.kubeConfig.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: ns.name })).rejects.toMatchObject({ code: 403 });
  });

  it('a restart keeps the data, the port and the CA: the same client keeps working', async () => {
    const core = api.kubeConfig.makeApiClient(CoreV1Api);
    const ns = await createTestNamespace(api.kubeConfig, { prefix: 'restart' });
    await core.createNamespacedConfigMap({ namespace: ns.name, body: { metadata: { name: 'kept' }, data: { a: '1' } } });
    await api.stopApiServer();
    await expect(core.readNamespacedConfigMap({ namespace: ns.name, name: 'kept' })).rejects.toThrow(/ECONNREFUSED/);
    await api.startApiServer();
    expect((await core.readNamespacedConfigMap({ namespace: ns.name, name: 'kept' })).data).toEqual({ a: '1' });
  });

  it('after an etcd compaction, a watch from an older resourceVersion gets a real 410 Gone', async () => {
    const core = api.kubeConfig.makeApiClient(CoreV1Api);
    const ns = await createTestNamespace(api.kubeConfig, { prefix: 'compact' });
    const list = await core.listNamespacedConfigMap({ namespace: ns.name });
    const old = list.metadata!.resourceVersion!;
    const rev = await api.compact();
    expect(rev).toBeGreaterThan(Number(old));
    const events: Array<{ type: string; code?: number }> = [];
    await new Promise<void>((resolve, reject) => {
      void new Watch(api.kubeConfig).watch(`/api/v1/namespaces/${ns.name}/configmaps`, { resourceVersion: old },
        (type, obj: { code?: number }) => events.push({ type, code: obj.code }),
        (err) => (err && (err as { statusCode?: number }).statusCode !== 410 ? reject(err) : resolve()));
    });
    expect(events).toContainEqual({ type: 'ERROR', code: 410 });
  });

  it('the fault proxy answers injected errors, passes the rest to the real server and cuts watches', async () => {
    const proxy = await startFaultProxy(api);
    try {
      const core = proxy.kubeConfig.makeApiClient(CoreV1Api);
      const h = proxy.fail({ path: '/api/v1/namespaces', method: 'GET', status: 503, times: 2 });
      await expect(core.listNamespace()).rejects.toMatchObject({ code: 503 });
      await expect(core.listNamespace()).rejects.toMatchObject({ code: 503 });
      expect(h.remaining).toBe(0);
      expect((await core.listNamespace()).items.map((n) => n.metadata!.name)).toContain('default');
      expect(proxy.requests.map((r) => [r.status, !!r.injected])).toEqual([[503, true], [503, true], [200, false]]);
      const ended = new Promise<unknown>((resolve) => {
        void new Watch(proxy.kubeConfig).watch('/api/v1/namespaces', {}, () => undefined, resolve);
      });
      await waitUntil('the watch to be open', () => proxy.activeWatches() === 1);
      expect(proxy.cutWatches()).toBe(1);
      expect(await ended).toBeNull(); // a clean end of the stream (client-node passes null)
    } finally {
      await proxy.close();
    }
  });

  it('a test process that is SIGKILLed leaves no etcd, no apiserver and no temp dir (watchdog)', async () => {
    const script = path.join(REPO_ROOT, 'test/support/envtest/fixtures/start-and-wait.ts');
    const child = spawn(path.join(REPO_ROOT, 'node_modules/.bin/vite-node'), [script], { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d; });
    child.stderr.on('data', (d: Buffer) => { err += d; });
    await waitUntil('the child to report its server', () => out.includes('\n'), 90_000).catch((e: Error) => { throw new Error(`${e.message}: ${err}`); });
    const info = JSON.parse(out.split('\n')[0]!) as { dir: string; pids: number[] };
    expect(info.pids).toHaveLength(2);
    for (const p of info.pids) expect(gone(p)).toBe(false);
    child.kill('SIGKILL');
    await waitUntil('the daemons to die and the dir to vanish', () => info.pids.every(gone) && !fs.existsSync(info.dir));
  }, 120_000);
  it('stop() ends both processes by PID (apiserver first) and removes the temp dir', async () => {
    const pids = fs.readdirSync(api.dir).filter((f) => f.endsWith('.pid')).sort().map((f) => Number(fs.readFileSync(path.join(api.dir, f), 'utf8')));
    expect(pids).toHaveLength(2);
    await api.stop();
    for (const p of pids) expect(gone(p), `pid ${p}`).toBe(true);
    expect(fs.existsSync(api.dir)).toBe(false);
    await api.stop(); // idempotent (afterAll calls it again)
  });
});
