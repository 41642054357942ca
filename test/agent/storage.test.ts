/**
 * Where images go besides the node-local directory: ConfigMaps (api storage) packed under the
 * object size limit, and a claim written through the source container's own mount of it —
 * beneath that container's root, never following a symlink the application planted.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { LIMITS } from '../../src/api/index.js';
import { ClaimWriteError, ImagesTooLarge, configMapName, planConfigMaps, writeThroughMount, type ImageFile } from '../../src/agent/storage.js';
import { claimMount } from '../../src/agent/dump.js';
import { missing } from '../helpers/env.js';

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });

const file = (container: string, name: string, size: number): ImageFile => ({ container, file: name, bytes: Buffer.alloc(size, name.length) });

describe('planConfigMaps', () => {
  it('puts every file in exactly one ConfigMap under <container>.<file>, laid out as <container>/<file>', () => {
    const plans = planConfigMaps('db-move', [file('db', 'manifest.json', 300), file('db', 'filelocks.img', 40), file('sidecar', 'manifest.json', 200)]);
    expect(plans).toHaveLength(1);
    expect(plans[0]!.name).toBe('db-move-lockmig-0');
    expect(plans[0]!.items).toEqual([
      { key: 'db.manifest.json', path: 'db/manifest.json' }, { key: 'db.filelocks.img', path: 'db/filelocks.img' }, { key: 'sidecar.manifest.json', path: 'sidecar/manifest.json' },
    ]);
    expect(Buffer.from(plans[0]!.binaryData['db.filelocks.img']!, 'base64')).toEqual(Buffer.alloc(40, 13));
  });
  it('splits under the size limit, counting base64 growth, and refuses what does not fit at all', () => {
    const big = Math.floor(LIMITS.apiChunkBytes / 2); // 2/3 of a chunk once in base64
    const plans = planConfigMaps('c', [file('a', 'x.img', big), file('b', 'y.img', big), file('c', 'z.img', 100)]);
    expect(plans.map((p) => p.items.map((i) => i.key))).toEqual([['a.x.img', 'c.z.img'], ['b.y.img']]);
    for (const p of plans) expect(p.bytes).toBeLessThanOrEqual(LIMITS.apiChunkBytes);
    expect(() => planConfigMaps('c', [file('a', 'huge.img', LIMITS.apiChunkBytes)])).toThrow(ImagesTooLarge);
    expect(() => planConfigMaps('c', Array.from({ length: 20 }, (_, i) => file('a', `f${i}.img`, big)))).toThrow(/more than the 8388608 bytes/);
  });
  it('names stay valid object names for the longest checkpoint names', () => {
    const n = configMapName(`${'a'.repeat(250)}.b`, 3);
    expect(n.length).toBeLessThanOrEqual(253);
    expect(n).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    expect(n.endsWith('-lockmig-3')).toBe(true);
  });
});

describe('claimMount', () => {
  const pod: V1Pod = {
    spec: {
      containers: [
        { name: 'app', image: 'x', volumeMounts: [{ name: 'data', mountPath: '/var/lib/app', subPath: 'app' }, { name: 'ro', mountPath: '/ro', readOnly: true }] },
        { name: 'side', image: 'y', volumeMounts: [{ name: 'data', mountPath: '/all' }] },
      ],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'pvc-a' } }, { name: 'ro', persistentVolumeClaim: { claimName: 'pvc-b' } }],
    },
  };
  it('finds a writable mount of the claim that contains the subPath, preferring dumped containers', () => {
    expect(claimMount(pod, 'pvc-a', 'app/ckpt', ['app'])).toEqual({ container: 'app', mountPath: '/var/lib/app', rel: 'ckpt' });
    expect(claimMount(pod, 'pvc-a', 'ckpt', ['app'])).toEqual({ container: 'side', mountPath: '/all', rel: 'ckpt' });
    expect(claimMount(pod, 'pvc-b', 'ckpt', ['app'])).toBeUndefined(); // read-only
    expect(claimMount(pod, 'pvc-c', 'ckpt', ['app'])).toBeUndefined();
  });
});

const skip = missing({ root: true, tools: ['unshare', 'mount', 'sleep'] }, 'writing into a claim through a container mount');

describe.skipIf(skip)('writeThroughMount', () => {
  async function container(binds: [string, string][]): Promise<number> {
    const cmd = binds.map(([a, b]) => `mount --bind '${a}' '${b}'`).join(' && ');
    const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${cmd} && exec sleep 60`], { stdio: 'ignore' });
    cleanups.push(() => child.kill('SIGKILL'));
    await new Promise((r) => setTimeout(r, 300));
    return child.pid!;
  }
  it('writes <subPath>/<container>/<file> into the volume as the container sees it, manifest last, atomically', async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-claim-'));
    cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
    fs.mkdirSync(`${d}/volume`);
    fs.mkdirSync(`${d}/mnt`);
    const pid = await container([[`${d}/volume`, `${d}/mnt`]]);
    writeThroughMount(pid, `${d}/mnt`, 'ckpt/one', [file('db', 'manifest.json', 10), file('db', 'filelocks.img', 5)]);
    expect(fs.readdirSync(`${d}/volume/ckpt/one/db`).sort()).toEqual(['filelocks.img', 'manifest.json']);
    expect(fs.readFileSync(`${d}/volume/ckpt/one/db/filelocks.img`)).toEqual(Buffer.alloc(5, 13));
    // written again (a retried dump): replaced in place, no temp files left
    writeThroughMount(pid, `${d}/mnt`, 'ckpt/one', [file('db', 'manifest.json', 11)]);
    expect(fs.readdirSync(`${d}/volume/ckpt/one/db`).sort()).toEqual(['filelocks.img', 'manifest.json']);
    expect(fs.statSync(`${d}/volume/ckpt/one/db/manifest.json`).size).toBe(11);
  });
  it('refuses a symlink the application planted in the path instead of writing where it points', async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-claim-'));
    cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
    fs.mkdirSync(`${d}/volume`);
    fs.mkdirSync(`${d}/mnt`);
    fs.mkdirSync(`${d}/victim`);
    fs.symlinkSync(`${d}/victim`, `${d}/volume/ckpt`); // absolute: would lead out of the container
    fs.mkdirSync(`${d}/volume/ok/db`, { recursive: true });
    fs.symlinkSync('/etc/hostname', `${d}/volume/ok/db/manifest.json`);
    const pid = await container([[`${d}/volume`, `${d}/mnt`]]);
    expect(() => writeThroughMount(pid, `${d}/mnt`, 'ckpt', [file('db', 'manifest.json', 3)])).toThrow(ClaimWriteError);
    expect(fs.readdirSync(`${d}/victim`)).toEqual([]);
    // a planted file symlink is replaced by the image (rename), never written through
    const before = fs.readFileSync('/etc/hostname');
    writeThroughMount(pid, `${d}/mnt`, 'ok', [file('db', 'manifest.json', 3)]);
    expect(fs.readFileSync('/etc/hostname')).toEqual(before);
    expect(fs.lstatSync(`${d}/volume/ok/db/manifest.json`).isFile()).toBe(true);
  });
});
