/** Peer matching as a specification (pure; the kernel side is covered in vault.test.ts). */
import { describe, it, expect } from 'vitest';
import { CgroupPathMatcher, PidMatcher, PodUidMatcher, NobodyMatcher, type PeerIdentity } from '../../src/handover/auth.js';
import { parseProcCgroup } from '../../src/proc/cgroup.js';

const UID = '0f8a1c3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const OTHER = '11111111-2222-4333-8444-555555555555';
const CID = 'a'.repeat(64);
const peer = (cgroupText: string, pid = 100): PeerIdentity => ({ pid, uid: 1000, gid: 1000, cgroups: parseProcCgroup(cgroupText) });

describe('TargetMatcher', () => {
  describe('PodUidMatcher (cluster mode)', () => {
    const m = new PodUidMatcher(UID);
    it.each([
      ['cgroupfs v1+v2, burstable', `12:memory:/kubepods/burstable/pod${UID}/${CID}\n0::/kubepods/burstable/pod${UID}/${CID}\n`],
      ['cgroupfs, guaranteed', `0::/kubepods/pod${UID}/${CID}\n`],
      ['systemd, burstable, containerd', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope\n`],
      ['systemd, besteffort', `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope\n`],
      ['seen from a private cgroup namespace', `0::/../../kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope\n`],
    ])('accepts %s', (_w, text) => {
      expect(m.match(peer(text))).toEqual({ ok: true });
    });
    it.each([
      ['another pod', `0::/kubepods/burstable/pod${OTHER}/${CID}\n`],
      ['a host process', '0::/system.slice/sshd.service\n'],
      ['a lookalike name outside kubepods', `0::/evil/pod${UID}/x\n`],
      ['a uid with a suffix', `0::/kubepods/burstable/pod${UID}0/${CID}\n`],
      ['v1 in the pod but v2 in another pod', `4:memory:/kubepods/burstable/pod${UID}/${CID}\n0::/kubepods/burstable/pod${OTHER}/${CID}\n`],
    ])('refuses %s', (_w, text) => {
      const r = m.match(peer(text));
      expect(r.ok).toBe(false);
    });
    it('normalizes the underscore form of a UID', () => {
      expect(new PodUidMatcher(UID.replace(/-/g, '_').toUpperCase()).podUID).toBe(UID);
      expect(() => new PodUidMatcher('not-a-uid')).toThrow();
    });
  });

  describe('CgroupPathMatcher (local mode)', () => {
    const m = new CgroupPathMatcher('/sys/fs/cgroup/unified/lockmig/target', '/sys/fs/cgroup/unified');
    it('normalizes a filesystem path under the cgroup2 mount to the cgroup path', () => {
      expect(m.cgroupPath).toBe('/lockmig/target');
      expect(new CgroupPathMatcher('/lockmig/target/', '/sys/fs/cgroup/unified').cgroupPath).toBe('/lockmig/target');
    });
    it.each([
      ['the cgroup itself', '0::/lockmig/target\n', true],
      ['a child cgroup', '0::/lockmig/target/sub\n', true],
      ['a sibling with a common prefix', '0::/lockmig/target2\n', false],
      ['the parent', '0::/lockmig\n', false],
      ['a path escaping a cgroup namespace', '0::/../lockmig/target\n', false],
      ['only v1 membership', '4:memory:/lockmig/target\n', false],
    ])('%s → %s', (_w, text, ok) => {
      expect(m.match(peer(text)).ok).toBe(ok);
    });
  });

  it('PidMatcher accepts exactly its pid; NobodyMatcher nobody', () => {
    expect(new PidMatcher(42).match(peer('0::/\n', 42)).ok).toBe(true);
    expect(new PidMatcher(42).match(peer('0::/\n', 43)).ok).toBe(false);
    expect(new NobodyMatcher().match().ok).toBe(false);
  });
});
