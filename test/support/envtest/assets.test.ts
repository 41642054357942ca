/** Where the Kubernetes test binaries are looked for, and what is said when they are not there. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { assetsIn } from './assets.js';
import { REPO_ROOT } from '../../helpers/env.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-assets-test-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const exe = (d: string, name: string) => {
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, name), '#!/bin/sh\n', { mode: 0o755 });
};

describe('assetsIn', () => {
  it('names what a directory lacks', () => {
    const d = path.join(dir, 'partial');
    exe(d, 'etcd');
    fs.writeFileSync(path.join(d, 'kubectl'), 'not executable', { mode: 0o644 });
    expect(assetsIn(d, 'KUBEBUILDER_ASSETS', () => undefined)).toEqual({ ok: false, reason: `KUBEBUILDER_ASSETS=${d} has no kube-apiserver, kubectl` });
  });

  it('takes helm from the directory, else from PATH (setup-envtest has none), else says so', () => {
    const d = path.join(dir, 'envtest');
    for (const t of ['etcd', 'kube-apiserver', 'kubectl']) exe(d, t);
    expect(assetsIn(d, 'KUBEBUILDER_ASSETS', () => undefined)).toEqual({ ok: false, reason: `KUBEBUILDER_ASSETS=${d} has no helm, and there is none on PATH` });
    const r = assetsIn(d, 'KUBEBUILDER_ASSETS', (n) => (n === 'helm' ? '/opt/bin/helm' : undefined));
    expect(r.ok && r.assets.bin).toEqual({ etcd: `${d}/etcd`, 'kube-apiserver': `${d}/kube-apiserver`, kubectl: `${d}/kubectl`, helm: '/opt/bin/helm' });
    exe(d, 'helm');
    const own = assetsIn(d, 'kit', () => '/opt/bin/helm');
    expect(own.ok && own.assets.bin.helm).toBe(`${d}/helm`);
  });

  it('a suite without the binaries prints the SKIPPING banner, and fails under CI', () => {
    const probe = `import { missing } from ${JSON.stringify(path.join(REPO_ROOT, 'test/helpers/env.ts'))}; console.log(JSON.stringify(missing({ k8s: true }, 'probe')));`;
    const f = path.join(dir, 'probe.ts');
    fs.writeFileSync(f, probe);
    const run = (env: NodeJS.ProcessEnv) => spawnSync(path.join(REPO_ROOT, 'node_modules/.bin/vite-node'), [f], { encoding: 'utf8', cwd: REPO_ROOT, env: { ...process.env, KUBEBUILDER_ASSETS: path.join(dir, 'partial'), ...env } });
    const lenient = run({ CI: '' });
    expect(lenient.status).toBe(0);
    expect(lenient.stdout.trim()).toBe('true');
    expect(lenient.stderr).toContain('!!!!!!!! SKIPPING "probe": needs the Kubernetes test binaries');
    const ci = run({ CI: 'true' });
    expect(ci.status).not.toBe(0);
    expect(ci.stderr).toContain('CI must provide the Kubernetes test binaries');
  });
});
