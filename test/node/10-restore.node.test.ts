/**
 * Migrations on the real node, checked by programs lockmig did not write:
 *  - re-take: SQLite in BEGIN EXCLUSIVE + OFD + flock → LockCheckpoint → Dumped → source deleted →
 *    restore pod: not Ready until its locks are held; `sqlite3` in a third pod says "database is
 *    locked", `flock -n` and an OFD attempt fail; /proc/locks names the restore pod's process;
 *  - restarts: the restored application restarts (twice, the second time after its checkpoint was
 *    deleted): never a crash loop;
 *  - handover: a contender pod hammers the flock and OFD locks from before the checkpoint until the
 *    restore pod holds everything: 0 wins; the POSIX window is reported; the vault is empty after;
 *  - the pod that received the locks by handover is checkpointed again and restored once more;
 *  - a lock that cannot be recorded (on an unlinked file) fails the checkpoint instead of a Ready
 *    checkpoint without it.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  SYSTEM_NS, apply, createNamespace, deleteNamespace, diagnostics, getPod, kubectl, kubectlOk, sleep, testNode,
  waitCheckpoint, waitFor, waitPodGone, waitPodReady, Inspector, IMAGES, hostPathVolume, podOn,
} from './support/cluster.js';
import {
  checkpoint, contend, dataDir, expectHeldBy, restorePod, startContender, startDatabase, waitDumped, waitLog,
} from './support/workloads.js';

let ns = '';
let node = '';
let insp: Inspector;

beforeAll(async () => {
  node = await testNode();
  ns = await createNamespace('restore');
  insp = await Inspector.start(ns, node);
});
afterAll(() => {
  if (insp) insp.sh(`rm -rf '/host/var/tmp/lockmig-node-test/${ns}'`);
  if (ns) deleteNamespace(ns);
});

function failureReport(): void {
  onTestFailed(() => console.log(diagnostics([ns])));
}

describe('re-take restore of a SQLite writer', () => {
  const data = () => dataDir(ns, 'retake');
  it('the restore pod is Ready only once it holds every lock; independent writers are refused; the kernel names its process', async () => {
    failureReport();
    const d = data();
    await startDatabase(node, ns, 'db-0', d);
    apply([checkpoint(ns, 'retake', 'db-0', { restore: { mode: 'Retake' } })]);
    const dumped = await waitDumped(ns, 'retake');
    expect(dumped.status?.phase).toBe('Dumped');
    expect(dumped.status?.locks).toMatchObject({ flock: 1, ofd: 1 });
    expect(dumped.status!.locks!.posix).toBeGreaterThan(0);
    // images in the API (the default storage): ConfigMaps owned by the checkpoint; and the agent's node-local copy
    expect(dumped.status?.agent?.storage).toBe('api');
    const cms = kubectlOk(['get', 'configmaps', '-n', ns, '-l', `lockmig.dev/checkpoint-uid=${dumped.metadata.uid}`, '-o', 'jsonpath={.items[*].metadata.ownerReferences[0].name}']);
    expect(cms.split(' ')).toEqual(['retake']);
    expect(insp.sh(`test -f /host/var/lib/lockmig/checkpoints/${node}/${ns}/retake/db/filelocks.img`).status).toBe(0);

    kubectlOk(['delete', 'pod', '-n', ns, 'db-0', '--wait=true']);
    await waitPodGone(ns, 'db-0');
    const t0 = Date.now();
    apply([restorePod(node, ns, 'db-1', d, 'retake')]);
    const ready = await waitPodReady(ns, 'db-1');
    console.log(`[node] re-take: restore pod created → Ready with its locks held in ${Date.now() - t0} ms`);
    expect(ready.spec?.readinessGates).toEqual([{ conditionType: 'lockmig.dev/locks-held' }]);
    const cond = ready.status?.conditions?.find((c) => c.type === 'lockmig.dev/locks-held');
    expect(cond).toMatchObject({ status: 'True', reason: 'LocksHeld' });
    const logs = await waitLog(ns, 'db-1', /"inherited"/);
    expect(logs).toMatch(/OFD:WRITE:0:99:\/data\/ofd.lock/);
    expect(logs).toMatch(/FLOCK:WRITE:0:EOF:\/data\/flock.lock/);

    const c = await startContender(node, ns, d, 'contender-retake');
    const sq = contend.sqlite(ns, c);
    expect(sq.status).not.toBe(0);
    expect(sq.stderr + sq.stdout).toMatch(/database is locked/);
    expect(contend.flock(ns, c).status).toBe(7);
    expect(contend.ofd(ns, c).status).toBe(1);
    expectHeldBy(insp, d, ready.metadata!.uid!);
    // the OFD lock sits on one of the restore pod's fds
    const ofdHolders = insp.podPids(ready.metadata!.uid!).filter((pid) => insp.fdLocks(pid).some((l) => l.lock.includes('OFDLCK')));
    expect(ofdHolders.length).toBeGreaterThan(0);

    const ck = await waitCheckpoint(ns, 'retake', (x) => x.status?.phase === 'Restored', 'Restored');
    expect(ck.status?.restoredPod).toMatchObject({ name: 'db-1', uid: ready.metadata!.uid });
    expect(ck.status?.restore).toMatchObject({ state: 'Held', podName: 'db-1', podUID: ready.metadata!.uid, handedOver: 0 });
    expect(ck.status?.restore?.windowMilliseconds).toBeGreaterThan(0);
    expect(ck.status?.conditions?.find((x) => x.type === 'LocksHeld')).toMatchObject({ status: 'True', reason: 'LocksHeld' });
    const events = kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'reason=LocksHeld', '-o', 'jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name} {end}']);
    expect(events).toContain('Pod/db-1');
    expect(events).toContain('LockCheckpoint/retake');
  });

  it('a restarted application starts again at once — also after its checkpoint and images were deleted — never a crash loop', async () => {
    failureReport();
    const restarts = async (n: number) => waitFor(`db-1 restarted ${n} time(s) and Running`, async () => {
      const p = await getPod(ns, 'db-1');
      const s = p?.status?.containerStatuses?.[0];
      return s && s.restartCount === n && s.state?.running ? p : undefined;
    }, 60_000);
    kubectlOk(['exec', '-n', ns, 'db-1', '--', 'kill', '1']);
    await restarts(1);
    expect(await waitLog(ns, 'db-1', /restart-after-restore/)).toContain('starting the command without restoring');

    const uid = (await waitCheckpoint(ns, 'retake', () => true, 'exists')).metadata.uid;
    kubectlOk(['delete', 'lckpt', '-n', ns, 'retake', '--wait=true', '--timeout=60s']);
    expect(insp.sh(`test -e /host/var/lib/lockmig/checkpoints/${node}/${ns}/retake`).status, 'images deleted with the checkpoint').not.toBe(0);
    await waitFor('its ConfigMaps garbage-collected', () => kubectlOk(['get', 'configmaps', '-n', ns, '-l', `lockmig.dev/checkpoint-uid=${uid}`, '-o', 'name']).trim() === '', 60_000, 500);
    kubectlOk(['exec', '-n', ns, 'db-1', '--', 'kill', '1']);
    const p = await restarts(2);
    expect(p.status?.containerStatuses?.[0]?.lastState?.terminated?.exitCode).toBe(0);
    await sleep(3000);
    const again = await getPod(ns, 'db-1');
    expect(again?.status?.containerStatuses?.[0]?.state?.running, 'still running, not in CrashLoopBackOff').toBeDefined();
    expect(again?.status?.containerStatuses?.[0]?.restartCount).toBe(2);
    kubectlOk(['delete', 'pod', '-n', ns, 'db-1', 'contender-retake', '--wait=false']);
  });
});

describe('same-node handover under a contender', () => {
  it('flock and OFD are never free (0 wins for a contender hammering them), POSIX is re-taken and its window reported', async () => {
    failureReport();
    const d = dataDir(ns, 'handover');
    await startDatabase(node, ns, 'hdb-0', d);
    // the contender hammers flock and OFD from before the checkpoint until the restore pod holds them
    apply([podOn(node, 'hammer', ns, {
      containers: [{
        name: 'h', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', volumeMounts: [{ name: 'data', mountPath: '/data' }],
        command: ['python3', '-c', String.raw`
import fcntl, json, os, struct, time
wins = {'ofd': 0, 'flock': 0}; tries = {'ofd': 0, 'flock': 0}
while not os.path.exists('/data/stop'):
    for kind, path in (('ofd', '/data/ofd.lock'), ('flock', '/data/flock.lock')):
        fd = os.open(path, os.O_RDWR)
        tries[kind] += 1
        try:
            if kind == 'ofd':
                fcntl.fcntl(fd, 37, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 100, 0))
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            wins[kind] += 1
        except OSError:
            pass
        os.close(fd)
print(json.dumps({'wins': wins, 'tries': tries}), flush=True)
time.sleep(3600)
`],
      }],
      volumes: [hostPathVolume('data', d.host)],
    })]);
    await waitPodReady(ns, 'hammer');

    apply([checkpoint(ns, 'hand', 'hdb-0')]);
    const ck = await waitDumped(ns, 'hand');
    expect(ck.status?.phase).toBe('HandoverReady');
    apply([restorePod(node, ns, 'hdb-1', d, 'hand')]);
    // the shim received the descriptions and queued its POSIX waits: the source may stop now
    await waitLog(ns, 'hdb-1', /handover-ready/);
    const notReady = await getPod(ns, 'hdb-1');
    expect(notReady?.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'not Ready while the shim waits for the POSIX lock').not.toBe('True');
    kubectlOk(['delete', 'pod', '-n', ns, 'hdb-0', '--wait=false']);
    const ready = await waitPodReady(ns, 'hdb-1');
    insp.shOk(`touch '/host${d.host}/stop'`);
    const out = await waitLog(ns, 'hammer', /"wins"/);
    const counts = JSON.parse(out.trim().split('\n').pop()!) as { wins: Record<string, number>; tries: Record<string, number> };
    console.log(`[node] handover contender: ${JSON.stringify(counts)}`);
    expect(counts.wins).toEqual({ ofd: 0, flock: 0 });
    expect(counts.tries.ofd).toBeGreaterThan(10);
    expect(counts.tries.flock).toBeGreaterThan(10);
    expectHeldBy(insp, d, ready.metadata!.uid!);

    const done = await waitCheckpoint(ns, 'hand', (x) => x.status?.phase === 'Restored', 'Restored');
    expect(done.status?.restore).toMatchObject({ state: 'Held', handedOver: 2, locks: { ofd: 1, flock: 1 } });
    expect(done.status?.restore?.windowMilliseconds).toBeGreaterThanOrEqual(0);
    expect(done.status?.agent?.sourceExit?.time).toBeDefined();
    console.log(`[node] handover: POSIX window ${done.status?.restore?.windowMilliseconds} ms`);
    expect(done.status?.conditions?.find((x) => x.type === 'LocksHeld')?.message).toMatch(/2 handed over .* never free; \d+ re-taken; longest window \d+ ms/);

    // the vault gave everything away: its gauge is back to 0
    const agent = kubectlOk(['get', 'pods', '-n', SYSTEM_NS, '-l', 'app.kubernetes.io/component=agent', '--field-selector', `spec.nodeName=${node}`, '-o', 'jsonpath={.items[0].metadata.name}']).trim();
    const metrics = await waitFor('vault gauge at 0', () => {
      const m = kubectlOk(['get', '--raw', `/api/v1/namespaces/${SYSTEM_NS}/pods/${agent}:8080/proxy/metrics`]);
      return /^lockmig_agent_vault_entries 0$/m.test(m) ? m : undefined;
    }, 20_000);
    expect(metrics).toMatch(/^lockmig_agent_restores_total\{result="Held"\} [1-9]/m);
  });

  it('the pod that received the locks by handover is checkpointed again (all its locks, by its own paths) and restored once more', async () => {
    failureReport();
    const d = dataDir(ns, 'handover');
    apply([checkpoint(ns, 'again', 'hdb-1', { restore: { mode: 'Retake' } })]);
    const ck = await waitDumped(ns, 'again');
    expect(ck.status?.phase, JSON.stringify(ck.status?.conditions)).toBe('Dumped');
    expect(ck.status?.locks).toMatchObject({ flock: 1, ofd: 1 });
    expect(ck.status!.locks!.posix).toBeGreaterThan(0);
    expect(ck.status?.skippedFds).toBe(0);
    kubectlOk(['delete', 'pod', '-n', ns, 'hdb-1', 'hammer', '--wait=true']);
    apply([restorePod(node, ns, 'hdb-2', d, 'again')]);
    const ready = await waitPodReady(ns, 'hdb-2');
    const c = await startContender(node, ns, d, 'contender-again');
    expect(contend.sqlite(ns, c).stderr).toMatch(/database is locked/);
    expect(contend.flock(ns, c).status).toBe(7);
    expectHeldBy(insp, d, ready.metadata!.uid!);
    kubectlOk(['delete', 'pod', '-n', ns, 'hdb-2', c, '--wait=false']);
  });
});

describe('locks that cannot be recorded', () => {
  it('a flock on an unlinked file fails the checkpoint (UnrecordableLocks) instead of a Ready checkpoint without it', async () => {
    failureReport();
    const d = dataDir(ns, 'unlinked');
    apply([podOn(node, 'ghost', ns, {
      containers: [{
        name: 'g', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', volumeMounts: [{ name: 'data', mountPath: '/data' }],
        command: ['python3', '-c', "import fcntl,os,signal\nfd=os.open('/data/gone',os.O_RDWR|os.O_CREAT)\nfcntl.flock(fd,fcntl.LOCK_EX)\nos.unlink('/data/gone')\nprint('held',flush=True)\nsignal.pause()"],
      }],
      volumes: [hostPathVolume('data', d.host)],
    })]);
    await waitPodReady(ns, 'ghost');
    await waitLog(ns, 'ghost', /held/);
    apply([checkpoint(ns, 'ghost', 'ghost')]);
    const ck = await waitCheckpoint(ns, 'ghost', (x) => x.status?.phase === 'Failed', 'Failed');
    expect(ck.status?.agent).toMatchObject({ state: 'Failed', reason: 'UnrecordableLocks' });
    expect(ck.status?.message).toMatch(/locked fd\(s\) cannot be recorded.*unlinked/);
    const denied = kubectl(['apply', '-f', '-'], { input: JSON.stringify(restorePod(node, ns, 'ghost-2', d, 'ghost')) });
    expect(denied.stderr).toMatch(/not ready to restore from: it failed/);
  });
});
