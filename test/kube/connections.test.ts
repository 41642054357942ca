/**
 * shareConnections: the real client-node (CoreV1Api, Watch) against a real TLS server of our own
 * (certificate made by openssl), counting TLS handshakes on the server side. Without it client-node
 * 1.x opens a new connection for every request (the first test proves that, so the others can fail).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import { shareConnections } from '../../src/kube/connections.js';
import { missing } from '../helpers/env.js';

const skip = missing({ tools: ['openssl'] }, 'API connections reused');

describe.skipIf(skip)('shareConnections', () => {
  let dir: string;
  let server: https.Server;
  let url: string;
  let ca: string;
  let handshakes = 0;
  const auth: string[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-conn-'));
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    ca = fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8');
    server = https.createServer({ key: fs.readFileSync(path.join(dir, 'key.pem')), cert: ca }, (req, res) => {
      auth.push(req.headers.authorization ?? '');
      if (req.url?.includes('watch=true')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(`${JSON.stringify({ type: 'ADDED', object: { kind: 'Namespace', apiVersion: 'v1', metadata: { name: 'a', resourceVersion: '2' } } })}\n`);
        setTimeout(() => res.end(), 50);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] }));
    });
    server.on('secureConnection', () => { handshakes++; });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const kubeConfig = (token = 'tok-1'): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: url, caData: Buffer.from(ca).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'u', token }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    return kc;
  };

  async function handshakesFor(kc: KubeConfig, calls: number, parallel = 1): Promise<number> {
    const core = kc.makeApiClient(CoreV1Api);
    const before = handshakes;
    for (let i = 0; i < calls; i += parallel) {
      await Promise.all(Array.from({ length: Math.min(parallel, calls - i) }, async () => {
        expect((await core.listNamespace()).items).toEqual([]);
      }));
    }
    return handshakes - before;
  }

  it('without it, client-node makes one TLS connection per request (what this fixes)', async () => {
    expect(await handshakesFor(kubeConfig(), 10)).toBe(10);
  });

  it('with it, sequential requests share one connection and concurrent ones a few, each still authenticated', async () => {
    const kc = shareConnections(kubeConfig('tok-shared'));
    expect(shareConnections(kc)).toBe(kc); // idempotent
    auth.length = 0;
    expect(await handshakesFor(kc, 20)).toBe(1);
    expect(await handshakesFor(kc, 40, 4)).toBeLessThanOrEqual(4);
    expect(auth).toHaveLength(60);
    expect(new Set(auth)).toEqual(new Set(['Bearer tok-shared']));
  });

  it('a watch on the shared agent works, and requests go on beside it', async () => {
    const kc = shareConnections(kubeConfig());
    const seen: string[] = [];
    const done = new Promise<unknown>((resolve) => {
      void new Watch(kc).watch('/api/v1/namespaces', {}, (type, obj: { metadata?: { name?: string } }) => seen.push(`${type} ${obj.metadata?.name}`), resolve);
    });
    expect(await handshakesFor(kc, 5)).toBeLessThanOrEqual(2);
    expect(await done).toBeNull();
    expect(seen).toEqual(['ADDED a']);
  });

  it('another CA is another TLS identity: an open connection verified against the old one is not reused', async () => {
    const kc = shareConnections(kubeConfig());
    expect(await handshakesFor(kc, 2)).toBe(1);
    // the same KubeConfig now names no CA: the system store does not know our self-signed
    // certificate, so the request must fail — reusing the open connection would let it through
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: url, skipTLSVerify: false }],
      users: [{ name: 'u', token: 't' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x',
    });
    await expect(kc.makeApiClient(CoreV1Api).listNamespace()).rejects.toThrow();
  });
});
