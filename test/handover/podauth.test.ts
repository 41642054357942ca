/**
 * Cluster-mode peer authentication against real cgroups: receivers run inside cgroup2
 * cgroups laid out exactly as the kubelet makes them (cgroupfs and systemd drivers); only
 * a process of the restore pod's UID receives, another pod's process gets nothing. Also
 * covers a transfer larger than one SCM_RIGHTS message (600 descriptions in 3 chunks).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { Vault, PodUidMatcher } from '../../src/handover/index.js';
import { missing } from '../helpers/env.js';
import { TestCgroup, startHolder, checkpointOf, tmpDir, runReceiver, flockFree, type LockSpec } from './helpers.js';

const skip = missing({ root: true, tools: ['unshare', 'flock', 'python3'] }, 'handover pod-UID authentication');

const POD = '3c1f2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b';
const OTHER = '9e8d7c6b-5a49-4382-9176-5f4e3d2c1b0a';
const CID = 'b'.repeat(64);

describe.skipIf(skip)('pod-UID authentication with kubelet cgroup layouts', () => {
  let dir: string;
  let vault: Vault;
  const cgs: TestCgroup[] = [];
  beforeAll(() => {
    dir = tmpDir('podauth');
    vault = new Vault({ socketPath: path.join(dir, 'v.sock'), connectionTimeoutMs: 5000 });
    vault.start();
  });
  afterAll(async () => {
    await vault?.close();
    // deepest first; every level once (the top-level "k" cgroup included)
    const top = new TestCgroup('k');
    const uniq = new Map([top, ...cgs].map((c) => [c.fsPath, c]));
    for (const cg of [...uniq.values()].sort((a, b) => b.fsPath.length - a.fsPath.length)) await cg.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** nested cgroups under a per-test root, as the kubelet would create them */
  function kubeCgroup(rel: string): TestCgroup {
    const parts = rel.split('/').filter(Boolean);
    let last: TestCgroup | undefined;
    for (let i = 1; i <= parts.length; i++) {
      last = new TestCgroup(`k/${parts.slice(0, i).join('/')}`);
      cgs.push(last);
    }
    return last!;
  }

  it.each([
    ['cgroupfs', `kubepods/burstable/pod${POD}/${CID}`, `kubepods/burstable/pod${OTHER}/${CID}`],
    ['systemd', `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope`,
      `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${OTHER.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope`],
  ])('%s layout: the restore pod receives, another pod is refused', async (driver, mine, theirs) => {
    const file = path.join(dir, `${driver}.db`);
    fs.writeFileSync(file, 'x');
    const h = await startHolder([{ path: file, fd: 5, kind: 'FLOCK', type: 'WRITE' }]);
    const name = `ns/${driver}.app`;
    vault.takeOver(name, checkpointOf(h), {});
    vault.setTarget(name, new PodUidMatcher(POD));
    h.kill();
    await h.exited();
    expect(flockFree(file)).toBe(false);

    const intruder = runReceiver(vault.socketPath, name, 'confirm', kubeCgroup(theirs));
    const bad = await intruder.result;
    expect(bad).toMatchObject({ ok: false, code: 'not-target' });
    expect(String(bad.message)).toMatch(new RegExp(`pod ${OTHER}`));
    expect(vault.status(name)?.state).toBe('held');

    const target = runReceiver(vault.socketPath, name, 'confirm', kubeCgroup(mine));
    const good = await target.result;
    expect(good.ok).toBe(true);
    expect(vault.status(name)?.state).toBe('delivered');
    expect(flockFree(file)).toBe(false);
    target.child.kill('SIGKILL');
    await new Promise((r) => target.child.once('exit', r));
    expect(flockFree(file)).toBe(true);
  });

  it('a receiver that comes before the target is known is told to retry, and succeeds once it is set', async () => {
    const file = path.join(dir, 'late.db');
    fs.writeFileSync(file, 'x');
    const h = await startHolder([{ path: file, fd: 5, kind: 'OFD', type: 'WRITE' }]);
    vault.takeOver('ns/late.app', checkpointOf(h), {});
    h.kill();
    await h.exited();
    const r = runReceiver(vault.socketPath, 'ns/late.app', 'confirm', kubeCgroup(`kubepods/pod${POD}/${'c'.repeat(64)}`));
    await new Promise((res) => setTimeout(res, 300)); // it is retrying on "not-ready" now
    expect(vault.status('ns/late.app')?.state).toBe('held');
    vault.setTarget('ns/late.app', new PodUidMatcher(POD));
    expect((await r.result).ok).toBe(true);
    r.child.kill('SIGKILL');
  });

  it('hands over 600 descriptions (more than one SCM_RIGHTS message) intact', async () => {
    const spec: LockSpec[] = [];
    for (let i = 0; i < 600; i++) {
      const p = path.join(dir, `many-${i}`);
      fs.writeFileSync(p, '');
      spec.push({ path: p, fd: 10 + i, kind: i % 2 ? 'FLOCK' : 'OFD', type: 'WRITE' });
    }
    const h = await startHolder(spec);
    vault.takeOver('ns/many.app', checkpointOf(h), {});
    vault.setTarget('ns/many.app', new PodUidMatcher(POD));
    h.kill();
    await h.exited();
    const r = runReceiver(vault.socketPath, 'ns/many.app', 'confirm', kubeCgroup(`kubepods/besteffort/pod${POD}/${'d'.repeat(64)}`));
    const got = await r.result;
    expect(got.ok).toBe(true);
    const fdinfo = got.fdinfo as Record<string, string>;
    expect(Object.keys(fdinfo)).toHaveLength(600);
    expect(Object.values(fdinfo).every((t) => /lock:\s+\d+: (OFDLCK|FLOCK)\s+ADVISORY\s+WRITE/.test(t))).toBe(true);
    expect(vault.heldDescriptions()).toBe(0);
    r.child.kill('SIGKILL');
  });
});
