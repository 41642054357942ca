/**
 * kubectl (client-go, written by nobody here) against the fake API server: discovery, apply (client- and
 * server-side), label selectors, merge patch, server-side printing, 422 messages, delete, and a watch. Written for
 * kubectl 1.20 (Debian 12's kubernetes-client) and newer.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missing } from '../helpers/env.js';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';

const WIDGETS = new URL('./fixtures/widgets.example.dev.yaml', import.meta.url).pathname;
const skip = missing({ tools: ['kubectl'] }, 'fake apiserver with kubectl');

describe.skipIf(skip)('kubectl against the fake API server', () => {
  let srv: FakeApiServer;
  /** Runs kubectl asynchronously (the server lives in this process, so spawnSync would deadlock). */
  const kubectl = (args: string[], input?: string) => new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
    const child = spawn('kubectl', ['--kubeconfig', srv.kubeconfigPath, '--cache-dir', cacheDir, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = ''; let err = '';
    const timer = setTimeout(() => child.kill(), 20_000);
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { err += c; });
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out, err }); });
    child.stdin.end(input ?? '');
  });
  let cacheDir: string;
  beforeAll(async () => {
    srv = await startFakeApiServer({ crds: [WIDGETS] });
    cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubectl-cache-')); // discovery cached across the calls below
  });
  afterAll(async () => {
    await srv?.close();
    if (cacheDir) fs.rmSync(cacheDir, { recursive: true, force: true });
  });

  it('discovers the built-in and custom resources', async () => {
    const r = (await kubectl(['api-resources', '--no-headers']));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^widgets\s+wdg\s+example\.dev\/v1alpha1\s+true\s+Widget$/m);
    expect(r.out).toMatch(/^leases\s+coordination\.k8s\.io\/v1\s+true\s+Lease$/m);
  });

  it('applies, selects, patches status and deletes a custom resource', async () => {
    const yaml = 'apiVersion: example.dev/v1alpha1\nkind: Widget\nmetadata: {name: k1, namespace: default, labels: {lockmig.dev/node: n1}}\nspec: {sourcePodName: db-0}\n';
    expect((await kubectl(['apply', '-f', '-'], yaml))).toMatchObject({ code: 0, out: 'widget.example.dev/k1 created\n' });
    expect((await kubectl(['apply', '--server-side', '-f', '-'], yaml))).toMatchObject({ code: 0, out: 'widget.example.dev/k1 serverside-applied\n' });
    const list = JSON.parse((await kubectl(['get', 'widgets', '-l', 'lockmig.dev/node=n1,tier notin (x)', '-o', 'json'])).out);
    expect(list.items.map((i: any) => i.metadata.name)).toEqual(['k1']);
    expect(list.items[0].spec).toMatchObject({ sourcePodName: 'db-0', color: 'red', restore: { mode: 'Auto' } });
    const imm = await kubectl(['patch', 'widget', 'k1', '--type=merge', '-p', '{"spec":{"color":"blue"}}']);
    expect(imm.code).not.toBe(0);
    expect(imm.err.trim()).toBe('The Widget "k1" is invalid: spec: Invalid value: "object": spec is immutable');
    // (status written by the API, not kubectl: `--subresource` needs kubectl >= 1.24 and Debian 12 ships 1.20)
    await srv.mergePatch('example.dev/v1alpha1', 'Widget', 'k1', 'default', { status: { phase: 'Done' } }, { status: true });
    // server-side printing of the CRD's additionalPrinterColumns (priority 1 columns only with -o wide)
    const table = await kubectl(['get', 'widgets', '-o', 'wide']);
    expect(table.out, table.out).toMatch(/^NAME\s+COLOR\s+PHASE\s+READY\s+AGE\nk1\s+red\s+Done\s+\d+s\n$/);
    expect((await kubectl(['delete', 'widget', 'k1']))).toMatchObject({ code: 0, out: 'widget.example.dev "k1" deleted\n' });
    const nf = (await kubectl(['get', 'widget', 'k1']));
    expect(nf.err.trim()).toBe('Error from server (NotFound): widgets.example.dev "k1" not found');
  });

  it('streams watch events to kubectl get --watch', async () => {
    const child = spawn('kubectl', ['--kubeconfig', srv.kubeconfigPath, 'get', 'configmaps', '-n', 'default', '--watch-only',
      '--output-watch-events', '-o', 'jsonpath={.type} {.object.metadata.name}{"\\n"}'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    try {
      const deadline = Date.now() + 10_000;
      while (srv.activeWatches() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(srv.activeWatches()).toBe(1);
      await srv.create({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'seen-by-kubectl', namespace: 'default' } });
      await srv.delete('v1', 'ConfigMap', 'seen-by-kubectl', 'default');
      while (!out.includes('DELETED') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(out).toBe('ADDED seen-by-kubectl\nDELETED seen-by-kubectl\n');
    } finally {
      child.kill();
    }
  });
});
