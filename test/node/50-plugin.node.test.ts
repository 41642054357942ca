/**
 * `kubectl lockmig` on a real node, invoked the way users invoke it: `kubectl lockmig …`, kubectl
 * finding the plugin executable `kubectl-lockmig` on PATH (a wrapper around this repository's
 * dist/src/cli/kubectl-lockmig.js), reading live locks from the agent through the API server's pod
 * proxy with the caller's credentials.
 *  - two pods sharing a hostPath volume: StatefulSet pod db-0 (namespace A) holds SQLite's locks, an
 *    OFD lock and a flock; pod reader (namespace B) has one container blocked in F_SETLKW on the
 *    OFD-locked file and one running sqlite3 in its busy wait on the database: `kubectl lockmig
 *    locks -A` shows holder and waiter with pod names and in-container paths, and the busy-waiting
 *    sqlite3 as an fd open on the database with no lock; the host pids match /proc/locks;
 *  - a user bound to a Role in namespace A (plus the chart's lockmig-lock-viewer in lockmig-system)
 *    sees namespace A only, and is refused namespace B;
 *  - `kubectl lockmig migrate db-0` (StatefulSet, label lockmig.dev/migrate: always) prints its
 *    progress, ends with a clear line, and the new db-0 holds the locks (kubectl lockmig locks and
 *    /proc/locks agree).
 * Prerequisite: `npm run build` (dist/) in this repository, as test/node/run.sh runs it.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  HOST_DATA, IMAGES, Inspector, SYSTEM_NS, apply, createNamespace, deleteNamespace, diagnostics, getPod, hostPathVolume, kubectl, kubectlOk, podOn,
  testNode, waitFor, waitPodGone, waitPodReady,
} from './support/cluster.js';
import { HOLDER_ARGS, waitLog } from './support/workloads.js';
import type { NodeLocks } from '../../src/agent/live-locks.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PLUGIN = path.join(REPO, 'dist/src/cli/kubectl-lockmig.js');

let nsA = '';
let nsB = '';
let node = '';
let insp: Inspector;
let binDir = '';
let aliceKubeconfig = '';
const shared = () => `${HOST_DATA}/${nsA}/shared`;
const report = () => onTestFailed(() => console.log(diagnostics([nsA, nsB])));

/** A kubeconfig for ServiceAccount nsA/NAME (a token from the TokenRequest API): a user with that account's RBAC. */
function kubeconfigFor(name: string): string {
  const token = kubectlOk(['create', 'token', name, '-n', nsA, '--duration=1h']).trim();
  const cfg = JSON.parse(kubectlOk(['config', 'view', '--raw', '--minify', '-o', 'json'])) as { users: { name: string; user: Record<string, unknown> }[] };
  cfg.users = [{ name: cfg.users[0]!.name, user: { token } }];
  const file = path.join(binDir, `${name}.kubeconfig`);
  fs.writeFileSync(file, JSON.stringify(cfg), { mode: 0o600 });
  return file;
}

/** `kubectl lockmig ARGS` as a user types it. */
function lockmig(args: readonly string[], timeoutMs = 120_000) {
  return kubectl(['lockmig', ...args], { timeoutMs });
}

beforeAll(async () => {
  if (!fs.existsSync(PLUGIN)) throw new Error(`${PLUGIN} is missing: run \`npm run build\` first`);
  // kubectl finds plugins on PATH by name: kubectl-lockmig
  binDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-plugin-bin-'));
  fs.writeFileSync(path.join(binDir, 'kubectl-lockmig'), `#!/bin/sh\nexec '${process.execPath}' '${PLUGIN}' "$@"\n`, { mode: 0o755 });
  process.env.PATH = `${binDir}:${process.env.PATH}`;
  node = await testNode();
  nsA = await createNamespace('plugin-a');
  nsB = await createNamespace('plugin-b');
  insp = await Inspector.start(nsA, node);
});
afterAll(() => {
  for (const ns of [nsA, nsB]) {
    if (!ns) continue;
    kubectl(['delete', 'statefulset,pods', '--all', '-n', ns, '--wait=true', '--timeout=60s']);
  }
  if (nsA) kubectl(['delete', 'rolebinding', `plugin-alice-${nsA}`, '-n', SYSTEM_NS, '--ignore-not-found']);
  for (const ns of [nsA, nsB]) if (ns) deleteNamespace(ns);
  if (binDir) fs.rmSync(binDir, { recursive: true, force: true });
});

describe('kubectl lockmig on a real node', () => {
  it('kubectl finds the plugin', () => {
    const r = lockmig(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/kubectl lockmig: see every file lock in the cluster/);
    // (plugin list exits 1 when some other kubectl-* on PATH is not executable: only its listing matters)
    expect(kubectl(['plugin', 'list']).stdout).toContain(path.join(binDir, 'kubectl-lockmig'));
  });

  it('locks -A: the holder pod, the F_SETLKW waiter of another namespace and the busy-waiting sqlite3, with in-container paths', async () => {
    report();
    apply([{
      apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: nsA },
      spec: {
        serviceName: 'db', replicas: 1, selector: { matchLabels: { app: 'db' } },
        template: {
          metadata: { labels: { app: 'db', 'lockmig.dev/migrate': 'always' } },
          spec: {
            terminationGracePeriodSeconds: 5, nodeSelector: { 'kubernetes.io/hostname': node },
            containers: [{ name: 'db', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['python3', '/usr/local/bin/holder.py', ...HOLDER_ARGS], volumeMounts: [{ name: 'data', mountPath: '/data' }] }],
            volumes: [hostPathVolume('data', shared())],
          },
        },
      },
    }]);
    await waitPodReady(nsA, 'db-0');
    await waitLog(nsA, 'db-0', /"sqlite"/);
    apply([podOn(node, 'reader', nsB, {
      containers: [
        {
          name: 'setlkw', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', volumeMounts: [{ name: 'shared', mountPath: '/data' }],
          command: ['python3', '-c', "import fcntl, os, struct\nfd = os.open('/data/ofd.lock', os.O_RDWR)\nprint('waiting', flush=True)\nfcntl.fcntl(fd, fcntl.F_SETLKW, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 0, 0))\nprint('got it', flush=True)\nimport time; time.sleep(3600)"],
        },
        {
          name: 'sqlite', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', volumeMounts: [{ name: 'shared', mountPath: '/data' }],
          command: ['sqlite3', '-cmd', '.timeout 3600000', '/data/app.db', 'BEGIN EXCLUSIVE;'],
        },
      ],
      volumes: [hostPathVolume('shared', shared())],
    })]);
    await waitPodReady(nsB, 'reader');
    await waitLog(nsB, 'reader', /waiting/);

    const r = await waitFor('kubectl lockmig locks -A to show the waiter and the open database', () => {
      const x = lockmig(['locks', '-A']);
      return x.status === 0 && /WAITING/.test(x.stdout) && /open, no lock/.test(x.stdout) ? x : undefined;
    }, 60_000, 1000);
    console.log(`$ kubectl lockmig locks -A\n${r.stdout}${r.stderr}`);
    const lines = r.stdout.split('\n');
    const row = (re: RegExp) => lines.find((l) => re.test(l));
    // holder: pid 1 in its container (holder.py is the container's first process), paths as the pod sees them
    expect(row(new RegExp(`^${nsA}\\s+db-0\\s+db\\s+1\\s+\\d+\\s+OFD\\s+WRITE\\s+0-99\\s+/data/ofd.lock\\s+data \\(hostPath ${shared()}\\)\\s+held, blocks 1`))).toBeDefined();
    expect(row(new RegExp(`^${nsA}\\s+db-0\\s+db\\s+1\\s+\\d+\\s+FLOCK\\s+WRITE\\s+0-EOF\\s+/data/flock.lock\\s`))).toBeDefined();
    expect(row(new RegExp(`^${nsA}\\s+db-0\\s+db\\s+1\\s+\\d+\\s+POSIX\\s+\\w+\\s+\\d+-\\d+\\s+/data/app.db\\s`))).toBeDefined();
    expect(row(new RegExp(`^${nsB}\\s+reader\\s+setlkw\\s+1\\s+3\\s+POSIX\\s+WRITE\\s+0-EOF\\s+/data/ofd.lock\\s+shared \\(hostPath ${shared()}\\)\\s+WAITING \\S+ for ${nsA}/db-0/db pid 1 fd \\d+ \\(OFD WRITE 0-99\\)`))).toBeDefined();
    expect(row(new RegExp(`^${nsB}\\s+reader\\s+sqlite\\s+1\\s+\\d+\\s+-\\s+-\\s+-\\s+/data/app.db\\s+shared \\(hostPath ${shared()}\\)\\s+open, no lock`))).toBeDefined();

    // the host pids agree with the kernel's table
    const json = JSON.parse(lockmig(['locks', '-A', '-o', 'json']).stdout) as { items: NodeLocks[] };
    const mine = json.items.flatMap((n) => n.locks).filter((l) => l.namespace === nsA && l.pod === 'db-0');
    const kernel = insp.locksOn(`${shared()}/ofd.lock`);
    expect(kernel.some((k) => k.kind === 'OFDLCK')).toBe(true);
    const fl = mine.find((l) => l.kind === 'FLOCK')!;
    expect(insp.locksOn(`${shared()}/flock.lock`).map((k) => k.pid)).toContain(fl.hostPid);
    const waiter = json.items.flatMap((n) => n.waiters).find((w) => w.pod === 'reader')!;
    expect(insp.shOk('cat /proc/locks')).toMatch(new RegExp(`-> POSIX\\s+ADVISORY\\s+WRITE ${waiter.hostPid} ${insp.fileKey(`${shared()}/ofd.lock`)} `));
  });

  it('a user bound to a Role in namespace A sees namespace A only', async () => {
    report();
    apply([
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'alice', namespace: nsA } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'pod-reader', namespace: nsA }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }] },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'alice-pod-reader', namespace: nsA }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-reader' }, subjects: [{ kind: 'ServiceAccount', name: 'alice', namespace: nsA }] },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `plugin-alice-${nsA}`, namespace: SYSTEM_NS }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'lockmig-lock-viewer' }, subjects: [{ kind: 'ServiceAccount', name: 'alice', namespace: nsA }] },
    ]);
    aliceKubeconfig = kubeconfigFor('alice');

    const r = lockmig(['locks', '-A', '--kubeconfig', aliceKubeconfig]);
    console.log(`$ kubectl lockmig locks -A   # as alice\n${r.stdout}${r.stderr}`);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${nsA}\\s+db-0\\s+db\\s+1\\s+\\d+\\s+OFD`, 'm'));
    expect(r.stdout).not.toContain(nsB);
    expect(r.stdout).not.toContain('reader');
    expect(r.stderr).toMatch(/not shown/);
    const b = lockmig(['locks', '-n', nsB, '--kubeconfig', aliceKubeconfig]);
    expect(b.status).toBe(1);
    expect(b.stderr).toMatch(/may not list pods in namespace/);
    // bob may read pods in A but holds no lockmig-lock-viewer: no agent to ask, and a pointer to the RBAC it needs
    apply([
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'bob', namespace: nsA } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'bob-pod-reader', namespace: nsA }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-reader' }, subjects: [{ kind: 'ServiceAccount', name: 'bob', namespace: nsA }] },
    ]);
    const bob = lockmig(['locks', '-n', nsA, '--kubeconfig', kubeconfigFor('bob')]);
    expect(bob.status).toBe(1);
    expect(bob.stderr).toMatch(/lockmig-lock-viewer/);
  });

  it('migrate db-0: progress, a clear final line, and the new db-0 holds the locks', async () => {
    report();
    // the busy-waiting sqlite3 would take SQLite's lock in the POSIX window: the reader goes first
    kubectlOk(['delete', 'pod', 'reader', '-n', nsB, '--wait=true', '--timeout=60s']);
    const old = (await getPod(nsA, 'db-0'))!;
    const r = lockmig(['migrate', 'db-0', '-n', nsA, '--timeout', '180s'], 240_000);
    console.log(`$ kubectl lockmig migrate db-0 -n ${nsA}\n${r.stderr}${r.stdout}`);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/lockcheckpoint.lockmig.dev\/db-0-[0-9a-f]{8} (created|exists)/);
    expect(r.stderr).toMatch(/(Dumped|HandoverReady): 3 lock\(s\)/);
    expect(r.stderr).toMatch(/pod .*db-0 deleted; waiting for StatefulSet db/);
    expect(r.stdout).toMatch(new RegExp(`^migrated ${nsA}/db-0 → pod db-0 on ${node}: .*held`, 'm'));
    const fresh = await waitPodReady(nsA, 'db-0');
    expect(fresh.metadata!.uid).not.toBe(old.metadata!.uid);
    await waitPodGone(nsB, 'reader').catch(() => undefined);

    const l = lockmig(['locks', 'db-0', '-n', nsA, '-o', 'json']);
    const locks = (JSON.parse(l.stdout) as { items: NodeLocks[] }).items.flatMap((n) => n.locks).filter((x) => x.pod === 'db-0');
    expect(locks.map((x) => x.kind).sort()).toEqual(expect.arrayContaining(['FLOCK', 'OFD', 'POSIX']));
    expect(locks.map((x) => x.path)).toEqual(expect.arrayContaining(['/data/ofd.lock', '/data/flock.lock', '/data/app.db']));
    // they are the new pod's processes, and the kernel says so
    for (const x of locks) expect(insp.podUIDOf(x.hostPid!)).toBe(fresh.metadata!.uid);
    // the flock sits on that fd of that process (its fdinfo lock: line); /proc/locks would name the pid
    // that first took it, which after a handover is the source's
    const fl = locks.find((x) => x.kind === 'FLOCK')!;
    expect(insp.fdLocks(fl.hostPid!).some((k) => k.fd === fl.fd && k.lock.includes('FLOCK'))).toBe(true);
    expect(insp.locksOn(`${shared()}/flock.lock`).length).toBeGreaterThan(0);
    console.log(`$ kubectl lockmig locks db-0 -n ${nsA}\n${lockmig(['locks', 'db-0', '-n', nsA]).stdout}`);
    const st = lockmig(['status', '-n', nsA]);
    expect(st.stdout).toMatch(/db-0-[0-9a-f]{8}\s+Restored\s+db-0/);
  });
});
