/**
 * cgroup parsing: /proc/<pid>/cgroup lines, /proc/mounts, and the kubelet's cgroup names in
 * both drivers (cgroupfs, systemd), v1 and v2, as real nodes write them. Then a real test:
 * cgroups named the kubelet way under the real cgroup2 mount, a real process moved in, found
 * by scanning /proc.
 */
import { describe, expect, it, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID, randomBytes } from 'node:crypto';
import {
  CgroupParseError, findCgroupMounts, findPodProcesses, kubeletCgroupOf, kubeletCgroupPath, parseCgroupMounts,
  parseKubeletCgroupPath, parseProcCgroup, podOfProcess,
} from '../../src/proc/cgroup.js';
import { missing } from '../helpers/env.js';

const UID = '0f8a1c3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const UID_ = UID.replace(/-/g, '_');
const CID = '3f2a9c1b7d5e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718';

describe('parseKubeletCgroupPath: the kubelet cgroup layouts', () => {
  const cases: Array<[string, string, ReturnType<typeof parseKubeletCgroupPath>]> = [
    ['cgroupfs burstable (v1 and v2 share the path)', `/kubepods/burstable/pod${UID}/${CID}`,
      { podUID: UID, containerID: CID, qos: 'Burstable', driver: 'cgroupfs' }],
    ['cgroupfs guaranteed has no QoS level', `/kubepods/pod${UID}/${CID}`,
      { podUID: UID, containerID: CID, qos: 'Guaranteed', driver: 'cgroupfs' }],
    ['cgroupfs besteffort', `/kubepods/besteffort/pod${UID}/${CID}`,
      { podUID: UID, containerID: CID, qos: 'BestEffort', driver: 'cgroupfs' }],
    ['cgroupfs pod cgroup itself (no container)', `/kubepods/burstable/pod${UID}`,
      { podUID: UID, qos: 'Burstable', driver: 'cgroupfs' }],
    ['cgroupfs CRI-O names the container crio-<id>', `/kubepods/besteffort/pod${UID}/crio-${CID}`,
      { podUID: UID, containerID: CID, qos: 'BestEffort', driver: 'cgroupfs', runtime: 'cri-o' }],
    ['systemd containerd burstable',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID}.scope`,
      { podUID: UID, containerID: CID, qos: 'Burstable', driver: 'systemd', runtime: 'containerd' }],
    ['systemd guaranteed', `/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${CID}.scope`,
      { podUID: UID, containerID: CID, qos: 'Guaranteed', driver: 'systemd', runtime: 'containerd' }],
    ['systemd besteffort docker',
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/docker-${CID}.scope`,
      { podUID: UID, containerID: CID, qos: 'BestEffort', driver: 'systemd', runtime: 'docker' }],
    ['systemd CRI-O', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${CID}.scope`,
      { podUID: UID, containerID: CID, qos: 'Burstable', driver: 'systemd', runtime: 'cri-o' }],
    ['systemd CRI-O conmon is not a container',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-conmon-${CID}.scope`,
      { podUID: UID, qos: 'Burstable', driver: 'systemd' }],
    ['kind nests the kubelet under kubelet.slice',
      `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`,
      { podUID: UID, containerID: CID, qos: 'BestEffort', driver: 'systemd', runtime: 'containerd' }],
    ['seen from a private cgroup namespace (v2 containerd default)',
      `/../../kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID}.scope`,
      { podUID: UID, containerID: CID, qos: 'Burstable', driver: 'systemd', runtime: 'containerd' }],
    ['cgroupfs seen from a private cgroup namespace hides the QoS', `/../pod${UID}/${CID}`,
      { podUID: UID, containerID: CID, driver: 'cgroupfs' }],
    ['a --cgroup-root prefix and systemd running inside the container',
      `/custom/root/kubepods/burstable/pod${UID}/${CID}/init.scope`,
      { podUID: UID, containerID: CID, qos: 'Burstable', driver: 'cgroupfs' }],
    ['docker-in-docker prefix', `/docker/${CID.slice(0, 12)}/kubepods/pod${UID}/${CID}`,
      { podUID: UID, containerID: CID, qos: 'Guaranteed', driver: 'cgroupfs' }],
    ['static pod: the kubelet uses the 32-hex config hash as UID',
      '/kubepods/burstable/pod6c2e0a2b9f1f4c3d8e7a6b5c4d3e2f10/' + CID,
      { podUID: '6c2e0a2b9f1f4c3d8e7a6b5c4d3e2f10', containerID: CID, qos: 'Burstable', driver: 'cgroupfs' }],
    ['upper-case hex is normalised', `/kubepods/pod${UID.toUpperCase()}/${CID.toUpperCase()}`,
      { podUID: UID, containerID: CID, qos: 'Guaranteed', driver: 'cgroupfs' }],
  ];
  it.each(cases)('%s', (_name, p, want) => {
    expect(parseKubeletCgroupPath(p)).toEqual(want);
  });

  const notPods: Array<[string, string]> = [
    ['the root', '/'],
    ['a systemd service', '/system.slice/containerd.service'],
    ['a user session', '/user.slice/user-0.slice/session-3.scope'],
    ['the QoS level alone', '/kubepods/burstable'],
    ['a "pod…" cgroup not under kubepods', `/myapp/pod${UID}/${CID}`],
    ['a pod segment whose UID is not a UID', '/kubepods/burstable/podnotauid/abc'],
    ['a systemd slice with a broken UID', '/kubepods.slice/kubepods-pod1234.slice'],
  ];
  it.each(notPods)('is undefined for %s', (_name, p) => {
    expect(parseKubeletCgroupPath(p)).toBeUndefined();
  });

  it('round-trips every layout through kubeletCgroupPath', () => {
    for (const driver of ['cgroupfs', 'systemd'] as const) {
      for (const qos of ['Guaranteed', 'Burstable', 'BestEffort'] as const) {
        const p = kubeletCgroupPath({ driver, qos, podUID: UID, containerID: CID, runtime: 'containerd' });
        expect(parseKubeletCgroupPath(p), p).toMatchObject({ podUID: UID, containerID: CID, qos, driver });
      }
    }
    expect(kubeletCgroupPath({ driver: 'systemd', qos: 'Burstable', podUID: UID, containerID: CID }))
      .toBe(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID}.scope`);
    expect(kubeletCgroupPath({ driver: 'cgroupfs', qos: 'Guaranteed', podUID: UID }))
      .toBe(`/kubepods/pod${UID}`);
  });
});

describe('parseProcCgroup', () => {
  it('parses a cgroup v1 (hybrid) file from a kubelet node and picks the pod from v1 lines', () => {
    const text = [
      `12:memory:/kubepods/burstable/pod${UID}/${CID}`,
      `11:cpu,cpuacct:/kubepods/burstable/pod${UID}/${CID}`,
      `1:name=systemd:/kubepods/burstable/pod${UID}/${CID}`,
      '0::/',
      '',
    ].join('\n');
    const lines = parseProcCgroup(text);
    expect(lines).toHaveLength(4);
    expect(lines[1]).toEqual({ hierarchyId: 11, controllers: ['cpu', 'cpuacct'], path: `/kubepods/burstable/pod${UID}/${CID}`, unified: false });
    expect(lines[3]).toEqual({ hierarchyId: 0, controllers: [], path: '/', unified: true });
    expect(kubeletCgroupOf(lines)).toMatchObject({ podUID: UID, containerID: CID, qos: 'Burstable' });
  });

  it('parses a pure cgroup v2 file (systemd driver)', () => {
    const p = `/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${CID}.scope`;
    const lines = parseProcCgroup(`0::${p}\n`);
    expect(lines).toEqual([{ hierarchyId: 0, controllers: [], path: p, unified: true }]);
    expect(kubeletCgroupOf(lines)).toEqual({ podUID: UID, containerID: CID, qos: 'Guaranteed', driver: 'systemd', runtime: 'containerd', path: p });
  });

  it('prefers the unified line when hierarchies disagree', () => {
    const other = '11111111-2222-3333-4444-555555555555';
    const lines = parseProcCgroup(`4:memory:/kubepods/pod${other}/${CID}\n0::/kubepods/pod${UID}/${CID}\n`);
    expect(kubeletCgroupOf(lines)?.podUID).toBe(UID);
  });

  it('keeps colons inside the path', () => {
    expect(parseProcCgroup('0::/a:b/c\n')[0]!.path).toBe('/a:b/c');
  });

  it.each([
    ['no colons', 'garbage'],
    ['one colon', '0:/x'],
    ['non-numeric id', 'x::/'],
    ['relative path', '0::kubepods'],
  ])('throws CgroupParseError with file and line for %s', (_n, line) => {
    const e = (() => { try { parseProcCgroup(`0::/\n${line}\n`, '/proc/42/cgroup'); } catch (err) { return err; } return undefined; })();
    expect(e).toBeInstanceOf(CgroupParseError);
    expect((e as CgroupParseError).message).toContain('/proc/42/cgroup:2');
    expect((e as CgroupParseError).raw).toBe(line);
  });
});

describe('parseCgroupMounts', () => {
  it('finds the cgroup2 mount and v1 controllers in a hybrid /proc/mounts', () => {
    const m = parseCgroupMounts([
      'proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0',
      'tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0',
      'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0',
      'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
      'cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0',
      'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0',
      'cgroup2 /var/lib/other\\040place cgroup2 rw 0 0',
    ].join('\n'));
    expect(m.cgroup2).toBe('/sys/fs/cgroup/unified');
    expect(m.v1.get('memory')).toBe('/sys/fs/cgroup/memory');
    expect(m.v1.get('cpuacct')).toBe('/sys/fs/cgroup/cpu,cpuacct');
    expect(m.v1.get('name=systemd')).toBe('/sys/fs/cgroup/systemd');
    expect(m.v1.has('relatime')).toBe(false);
  });

  it('handles a pure v2 host and escaped mount points', () => {
    const m = parseCgroupMounts('cgroup2 /sys/fs/cgroup\\040x cgroup2 rw,nsdelegate 0 0\n');
    expect(m.cgroup2).toBe('/sys/fs/cgroup x');
    expect(m.v1.size).toBe(0);
  });
});

describe('findPodProcesses on a fake /proc', () => {
  it('returns the pod\'s processes with their container IDs and skips others', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-fakeproc-'));
    try {
      const put = (pid: string, text: string) => {
        fs.mkdirSync(path.join(root, pid));
        fs.writeFileSync(path.join(root, pid, 'cgroup'), text);
      };
      put('10', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${CID}.scope\n`);
      put('7', `4:memory:/kubepods/burstable/pod${UID}/${CID}\n0::/\n`);
      put('12', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice\n`);
      put('13', '0::/kubepods/pod11111111-2222-3333-4444-555555555555/abcdefabcdef\n');
      put('14', '0::/system.slice/kubelet.service\n');
      fs.mkdirSync(path.join(root, '15')); // exited between readdir and read
      fs.mkdirSync(path.join(root, 'self'));
      const got = findPodProcesses(UID, { procRoot: root });
      expect(got).toEqual([
        { pid: 7, containerID: CID, cgroupPath: `/kubepods/burstable/pod${UID}/${CID}` },
        { pid: 10, containerID: CID, cgroupPath: expect.stringContaining('cri-containerd-') },
        { pid: 12, cgroupPath: expect.stringContaining(`pod${UID_}.slice`) },
      ]);
      expect(findPodProcesses(UID_.toUpperCase(), { procRoot: root }).map((p) => p.pid)).toEqual([7, 10, 12]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

const noRoot = missing({ root: true }, 'cgroup: real kubelet-named cgroups under cgroup2');

describe.skipIf(noRoot)('findPodProcesses with real cgroups under the real cgroup2 mount', () => {
  const mounts = findCgroupMounts();
  const made: string[] = [];
  const kids: ChildProcess[] = [];

  afterAll(() => {
    for (const k of kids) k.kill('SIGKILL');
    // Remove leaf-first once the processes are gone (rmdir fails while a cgroup has members).
    for (const dir of made.reverse()) {
      for (let i = 0; i < 50; i++) {
        try { fs.rmdirSync(dir); break; } catch { const t = Date.now() + 20; while (Date.now() < t) { /* wait for exit */ } }
      }
    }
  });

  function mkCgroup(rel: string): string {
    let cur = mounts.cgroup2!;
    for (const seg of rel.split('/').filter(Boolean)) {
      cur = path.join(cur, seg);
      if (!fs.existsSync(cur)) { fs.mkdirSync(cur); made.push(cur); }
    }
    return cur;
  }

  async function sleeper(): Promise<ChildProcess> {
    const c = spawn('sleep', ['60'], { stdio: 'ignore' });
    kids.push(c);
    await new Promise((r) => c.once('spawn', r));
    return c;
  }

  it('finds processes placed in systemd- and cgroupfs-named cgroups', async () => {
    expect(mounts.cgroup2, 'cgroup2 must be mounted (see /proc/mounts)').toBeTruthy();
    const uid = randomUUID();
    const cidA = randomBytes(32).toString('hex');
    const cidB = randomBytes(32).toString('hex');
    // The systemd driver's names, and (for a second pod) the cgroupfs driver's.
    const dirA = mkCgroup(`lockmig-test-${process.pid}/${kubeletCgroupPath({ driver: 'systemd', qos: 'Burstable', podUID: uid, containerID: cidA })}`);
    const dirB = mkCgroup(`lockmig-test-${process.pid}/${kubeletCgroupPath({ driver: 'cgroupfs', qos: 'BestEffort', podUID: uid, containerID: cidB })}`);
    const other = randomUUID();
    const dirC = mkCgroup(`lockmig-test-${process.pid}/${kubeletCgroupPath({ driver: 'cgroupfs', qos: 'Guaranteed', podUID: other, containerID: cidB })}`);
    const [a, b, c] = [await sleeper(), await sleeper(), await sleeper()];
    fs.writeFileSync(path.join(dirA, 'cgroup.procs'), String(a.pid));
    fs.writeFileSync(path.join(dirB, 'cgroup.procs'), String(b.pid));
    fs.writeFileSync(path.join(dirC, 'cgroup.procs'), String(c.pid));

    // The kernel's view, read independently of the parser.
    expect(fs.readFileSync(`/proc/${a.pid}/cgroup`, 'utf8')).toContain(`cri-containerd-${cidA}.scope`);

    const found = findPodProcesses(uid);
    expect(found.map((p) => p.pid).sort()).toEqual([a.pid!, b.pid!].sort());
    expect(found.find((p) => p.pid === a.pid)?.containerID).toBe(cidA);
    expect(found.find((p) => p.pid === b.pid)?.containerID).toBe(cidB);
    expect(podOfProcess(c.pid!)).toMatchObject({ podUID: other, qos: 'Guaranteed', containerID: cidB });
    expect(podOfProcess(process.pid)).toBeUndefined();
  });

  it('finds a process whose pod shows only in a cgroup v1 hierarchy (hybrid host)', async () => {
    // a named or controller v1 hierarchy from /proc/mounts (pids is cheap; name=systemd otherwise)
    const v1 = mounts.v1.get('pids') ?? mounts.v1.get('name=systemd');
    expect(v1, 'a cgroup v1 hierarchy must be mounted on this hybrid host').toBeTruthy();
    const uid = randomUUID();
    const cid = randomBytes(32).toString('hex');
    let cur = v1!;
    for (const seg of `lockmig-test-${process.pid}${kubeletCgroupPath({ driver: 'cgroupfs', qos: 'Burstable', podUID: uid, containerID: cid })}`.split('/').filter(Boolean)) {
      cur = path.join(cur, seg);
      if (!fs.existsSync(cur)) { fs.mkdirSync(cur); made.push(cur); }
    }
    const p = await sleeper();
    fs.writeFileSync(path.join(cur, 'cgroup.procs'), String(p.pid));
    const lines = parseProcCgroup(fs.readFileSync(`/proc/${p.pid}/cgroup`, 'utf8'));
    expect(lines.find((l) => !l.unified && l.path.includes(`pod${uid}`)), 'the kernel shows the v1 path').toBeTruthy();
    expect(findPodProcesses(uid)).toEqual([{ pid: p.pid, containerID: cid, cgroupPath: expect.stringContaining(`/kubepods/burstable/pod${uid}/${cid}`) }]);
  });
});
