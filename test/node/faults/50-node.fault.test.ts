/**
 * The node under a migration:
 *  - disk full when the images are written (a tmpfs of 16 KiB, already full, at the namespace's
 *    node-local directory under the agent's storage root): the checkpoint ends Failed with a
 *    reason naming the lack of space, nothing is left behind (no image, no temporary file), and a
 *    restore pod naming it is refused instead of started without locks;
 *  - a hostile process on the node (root, host pid namespace, not in the restore pod's cgroup)
 *    talking to the agent's vault socket all through a pending handover: garbage, a request in
 *    the wrong version, requests for the checkpoint's entries from the wrong pod, replays on one
 *    connection, an out-of-order confirm, a request carrying a descriptor, an oversized request
 *    and idle connections kept open. Each is refused, not one descriptor leaks to it, and the real
 *    restore pod still receives every description.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SYSTEM_NS, background, getCheckpoint, kubectl } from '../support/cluster.js';
import { restorePod } from '../support/workloads.js';
import { KIT_DIR, RUNS, componentPods, killAgent, record, settle, waitAgentBack, warnings } from '../support/faults.js';
import {
  contendersRefused, createCheckpoint, createRestorePod, deleteSource, diagnoseOnFailure, expectRestored, handoverReady, startSource, teardown, world, type World,
} from './common.js';

let w: World | undefined;
beforeAll(async () => { w = await world('fault-node'); });
afterAll(() => teardown(w));

/**
 * A shell command in the node's own mount namespace: on the kit the suite runs on the node itself;
 * elsewhere through the inspector (privileged, hostPID) entering pid 1's mount namespace.
 */
function onHost(x: World, script: string): { status: number | null; stdout: string; stderr: string } {
  if (KIT_DIR) {
    const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  return x.insp.sh(`nsenter -t 1 -m sh -c '${script}'`);
}

describe('disk full', () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`when the images are written: Failed with a reason, no half image, a restore pod naming it refused (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const s = await startSource(x, `d1-${run}`);
      // the node's filesystem under the agent's storage root for this namespace: a full 16 KiB tmpfs,
      // mounted in the node's mount namespace (the agent's image has no shell); a new agent
      // container sees it (its hostPath volume is a recursive bind of the host's directory)
      const dir = `/var/lib/lockmig/checkpoints/${x.node}/${x.ns}`;
      const mnt = onHost(x, `mkdir -p ${dir} && mount -t tmpfs -o size=16k lockmig-fault-full ${dir} && (dd if=/dev/zero of=${dir}/filler bs=1k count=64 2>/dev/null; true) && df -k ${dir} | tail -1`);
      expect(mnt.status, mnt.stderr).toBe(0);
      try {
        await killAgent(x.insp, x.node);
        await waitAgentBack(x.node);
        const t0 = Date.now();
        createCheckpoint(x, `d1-${run}`, s.name, { storage: { nodeLocal: { path: `d1-${run}` } } });
        const c = await settle(x.ns, `d1-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 90_000);
        expect(c.status?.phase, JSON.stringify(c.status)).toBe('Failed');
        const ready = c.status?.conditions?.find((k) => k.type === 'Ready');
        const text = `${ready?.reason}: ${ready?.message} ${c.status?.agent?.reason ?? ''} ${c.status?.agent?.message ?? ''}`;
        expect(text).toMatch(/ENOSPC|no space/i);
        const left = onHost(x, `ls -A ${dir}`).stdout.split('\n').filter(Boolean);
        expect(left, 'nothing but the filler is left in the full directory').toEqual(['filler']);
        const ev = warnings(x.ns, `d1-${run}`);
        expect(ev.length).toBeGreaterThan(0);
        const r = kubectl(['apply', '-f', '-'], { input: JSON.stringify(restorePod(x.node, x.ns, `d1-${run}-r`, s.data, `d1-${run}`)) });
        expect(r.status).not.toBe(0);
        expect(r.stderr).toMatch(/lockmig/);
        // the source never stopped: its locks are still its own
        expect(contendersRefused(x, s)).toEqual({ sqlite: true, flock: true, ofd: true });
        record('disk full (16 KiB tmpfs storage root)', 'while the images are written', 'failed with reason',
          `Failed/${ready?.reason} in ${Date.now() - t0} ms: ${(ready?.message ?? '').slice(0, 140)}; nothing left on disk; restore pod refused: ${r.stderr.trim().slice(0, 120)}`, Date.now() - t0);
      } finally {
        onHost(x, `umount -l ${dir}`);
        // a fresh agent container, without the tmpfs in its mounts
        await killAgent(x.insp, x.node);
        await waitAgentBack(x.node);
      }
    });
  }
});

const HOSTILE = String.raw`
import array, json, os, socket, sys, time
path, names, secs = sys.argv[1], sys.argv[2].split(','), float(sys.argv[3])
stats = {'conversations': 0, 'fds_received': 0, 'replies': {}, 'errors': {}}
def note(d, k): d[k] = d.get(k, 0) + 1
def talk(msgs, fds=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(3)
    try:
        s.connect(path)
        stats['conversations'] += 1
        for m in msgs:
            if fds: socket.send_fds(s, [m], fds)
            else: s.send(m)
            data, got, flags, _ = socket.recv_fds(s, 1 << 17, 64)
            stats['fds_received'] += len(got)
            for f in got: os.close(f)
            if not data: note(stats['replies'], 'hangup'); break
            try:
                j = json.loads(data); note(stats['replies'], j.get('op', '?') + ':' + j.get('code', ''))
            except ValueError:
                note(stats['replies'], 'unparsable')
    except socket.timeout: note(stats['errors'], 'timeout')
    except OSError as e: note(stats['errors'], type(e).__name__)
    finally: s.close()
idle = []
for _ in range(4):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try: s.connect(path); idle.append(s)
    except OSError: pass
end = time.time() + secs
while time.time() < end:
    talk([b'\x00\xffgarbage'])
    talk([b'{"v":2,"op":"receive","checkpoint":"x"}'])
    for n in names:
        r = json.dumps({'v': 1, 'op': 'receive', 'checkpoint': n}).encode()
        talk([r, r])
        talk([json.dumps({'v': 1, 'op': 'confirm', 'checkpoint': n, 'fileIds': [1, 2]}).encode()])
        talk([r], fds=[0])
    talk([b'{' + b' ' * 70000 + b'}'])
    time.sleep(0.05)
for s in idle: s.close()
print(json.dumps(stats))
`;

describe('hostile client on the vault socket', () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`while a handover is pending: every request refused, no descriptor leaks, the restore pod receives everything (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const { source: s, checkpoint: c } = await handoverReady(x, `v1-${run}`);
      const socketPath = `/host${c.status!.agent!.handoverSocket!}`;
      await deleteSource(x, s);
      const t0 = Date.now();
      const names = [`${x.ns}/v1-${run}.db`, `v1-${run}`, `${x.ns}/v1-${run}`].join(',');
      const hostile = background('kubectl', ['exec', '-n', x.ns, x.insp.pod, '--', 'python3', '-c', HOSTILE, socketPath, names, '25']);
      await new Promise((r) => setTimeout(r, 5000));
      createRestorePod(x, s, `v1-${run}-r`, `v1-${run}`);
      const done = await expectRestored(x, s, `v1-${run}-r`, `v1-${run}`);
      const out = await hostile.done;
      expect(out.status, out.stderr).toBe(0);
      const stats = JSON.parse(out.stdout.trim().split('\n').pop()!) as { conversations: number; fds_received: number; replies: Record<string, number>; errors: Record<string, number> };
      console.log(`[fault] hostile client: ${JSON.stringify(stats)}`);
      expect(stats.conversations).toBeGreaterThan(20);
      expect(stats.fds_received, 'descriptors received by the hostile client').toBe(0);
      for (const k of Object.keys(stats.replies)) expect(k, 'every reply to the hostile client is a refusal or a hang-up').toMatch(/^(refused:[a-z-]+|hangup)$/);
      expect(done.status?.restore?.handedOver).toBe(2);
      expect((await getCheckpoint(x.ns, `v1-${run}`))?.status?.phase).toBe('Restored');
      const vaultLog = kubectl(['logs', '-n', SYSTEM_NS, (await componentPods('agent', x.node))[0]!.name, '--tail=2000']).stdout;
      expect(vaultLog).toMatch(/"event":"refused"/);
      record('hostile client on the vault socket', 'mid-handover (pending, then receiving)', 'refused',
        `${stats.conversations} conversations, 0 descriptors leaked, replies ${JSON.stringify(stats.replies)}; the restore pod received all ${done.status?.restore?.handedOver}`, Date.now() - t0);
    });
  }
});
