/**
 * Installing a bundle on a node: content-addressed directories, an atomically replaced
 * `current` link, verification against the manifest, idempotence, and cleanup that keeps the
 * previous bundle for pods that are starting from it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BundleError, describeFiles, verifyShimBundle } from '../../src/bundle/build.js';
import { CURRENT_LINK, bundleId, defaultBundleSource, installShimBundle } from '../../src/bundle/install.js';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-install-'));
  dirs.push(d);
  return d;
}
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });

/** A small bundle-shaped directory with a real manifest. */
function fakeBundle(content: string): string {
  const d = tmp();
  fs.mkdirSync(path.join(d, 'lib'));
  fs.mkdirSync(path.join(d, 'bin'));
  fs.writeFileSync(path.join(d, 'lib/ld.so'), `loader ${content}`);
  fs.writeFileSync(path.join(d, 'bin/node'), `node ${content}`, { mode: 0o755 });
  fs.writeFileSync(path.join(d, 'bundle.json'), JSON.stringify({ format: 1, files: describeFiles(d) }));
  return d;
}

describe('installShimBundle', () => {
  it('copies the bundle into a content-named directory and points current at it', () => {
    const src = fakeBundle('v1');
    const shimDir = path.join(tmp(), 'shim');
    const r = installShimBundle(src, shimDir);
    expect(r.changed).toBe(true);
    expect(r.id).toMatch(/^b-[0-9a-f]{16}$/);
    expect(fs.readlinkSync(path.join(shimDir, CURRENT_LINK))).toBe(r.id);
    expect(fs.readFileSync(path.join(shimDir, CURRENT_LINK, 'bin/node'), 'utf8')).toBe('node v1');
    expect(fs.statSync(path.join(shimDir, CURRENT_LINK, 'bin/node')).mode & 0o111).not.toBe(0);
    expect(verifyShimBundle(r.dir)).toEqual([]);
  });

  it('does nothing when the same content is already current', () => {
    const src = fakeBundle('v1');
    const shimDir = path.join(tmp(), 'shim');
    const a = installShimBundle(src, shimDir);
    const b = installShimBundle(fakeBundle('v1'), shimDir);
    expect(b.changed).toBe(false);
    expect(b.id).toBe(a.id);
  });

  it('switches to new content, keeps the previous bundle and removes older ones', () => {
    const shimDir = path.join(tmp(), 'shim');
    const v1 = installShimBundle(fakeBundle('v1'), shimDir);
    const v2 = installShimBundle(fakeBundle('v2'), shimDir);
    expect(v2.id).not.toBe(v1.id);
    expect(fs.readlinkSync(path.join(shimDir, CURRENT_LINK))).toBe(v2.id);
    expect(fs.existsSync(v1.dir)).toBe(true);
    const v3 = installShimBundle(fakeBundle('v3'), shimDir);
    expect(v3.removed).toEqual([v1.id]);
    expect(fs.readdirSync(shimDir).sort()).toEqual([v2.id, v3.id, CURRENT_LINK].sort());
  });

  it('repairs a damaged installed copy instead of trusting it', () => {
    const src = fakeBundle('v1');
    const shimDir = path.join(tmp(), 'shim');
    const r = installShimBundle(src, shimDir);
    fs.writeFileSync(path.join(r.dir, 'bin/node'), 'tampered');
    const again = installShimBundle(src, shimDir);
    expect(again.changed).toBe(true);
    expect(fs.readFileSync(path.join(shimDir, CURRENT_LINK, 'bin/node'), 'utf8')).toBe('node v1');
  });

  it('refuses a damaged source and leaves the node untouched', () => {
    const shimDir = path.join(tmp(), 'shim');
    const good = installShimBundle(fakeBundle('v1'), shimDir);
    const bad = fakeBundle('v2');
    fs.writeFileSync(path.join(bad, 'lib/ld.so'), 'truncated');
    expect(() => installShimBundle(bad, shimDir)).toThrow(BundleError);
    expect(() => installShimBundle(bad, shimDir)).toThrow(/lib\/ld\.so: (size|checksum) differs/);
    expect(fs.readlinkSync(path.join(shimDir, CURRENT_LINK))).toBe(good.id);
    expect(fs.readdirSync(shimDir).sort()).toEqual([good.id, CURRENT_LINK].sort());
  });

  it('names bundles by content only', () => {
    const files = [{ path: 'a', size: 1, sha256: 'x' }, { path: 'b', size: 2, sha256: 'y' }];
    expect(bundleId({ files })).toBe(bundleId({ files: [...files].reverse() }));
    expect(bundleId({ files })).not.toBe(bundleId({ files: [{ ...files[0]!, sha256: 'z' }, files[1]!] }));
  });

  it('finds the image bundle from LOCKMIG_SHIM_BUNDLE', () => {
    expect(defaultBundleSource({ LOCKMIG_SHIM_BUNDLE: '/app/shim' })).toBe('/app/shim');
    expect(defaultBundleSource({ LOCKMIG_SHIM_SOURCE: '/opt/shim' })).toBe('/opt/shim');
    expect(defaultBundleSource({})).toMatch(/\/shim$/);
  });
});
