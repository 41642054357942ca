/**
 * The webhook over real HTTPS (a certificate made by openssl, trusted explicitly by the client),
 * speaking AdmissionReview v1 as the API server does. The checkpoint store here is an in-memory
 * one with resourceVersions, so the claim race (409) can be forced; test/webhook/apiserver.test.ts
 * has a real kube-apiserver call the same server and enforce the claim's preconditions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import type { V1Pod } from '@kubernetes/client-node';
import { parseLockCheckpoint, type LockCheckpoint, type RestoredPod } from '../../src/api/index.js';
import { ConflictError, type CheckpointStore } from '../../src/webhook/checkpoints.js';
import { DEFAULT_WEBHOOK_CONFIG } from '../../src/webhook/mutate.js';
import { startWebhookServer, type WebhookServer } from '../../src/webhook/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { missing } from '../helpers/env.js';
import { applyJsonPatch } from './jsonpatch.js';
import { makeCert, postReview } from './tls.js';

class MemStore implements CheckpointStore {
  objs = new Map<string, LockCheckpoint>();
  rv = 1;
  beforeClaim?: () => void;
  claims = 0;
  put(raw: Record<string, any>) {
    const o = parseLockCheckpoint({ ...raw, metadata: { ...raw.metadata, resourceVersion: String(++this.rv) } });
    this.objs.set(`${o.metadata.namespace}/${o.metadata.name}`, o);
  }
  async get(ns: string, name: string) { return this.objs.get(`${ns}/${name}`); }
  async claim(ns: string, name: string, rv: string | undefined, restoredPod: RestoredPod) {
    this.beforeClaim?.();
    const cur = this.objs.get(`${ns}/${name}`);
    if (!cur) throw new Error('gone');
    if (rv !== cur.metadata.resourceVersion) throw new ConflictError('conflict');
    this.claims++;
    this.put({ ...structuredClone(cur), status: { ...structuredClone(cur.status), restoredPod } });
  }
}

const CKPT = {
  apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
  metadata: { name: 'db-move', namespace: 'prod' },
  spec: { sourcePodName: 'db-0' },
  status: { phase: 'Dumped', nodeName: 'node-a' },
};

function review(pod: V1Pod, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview',
    request: { uid: `uid-${Math.random()}`, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'prod', operation: 'CREATE', object: pod, ...extra },
  };
}

function pod(name: string): V1Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'prod', annotations: { 'lockmig.dev/restore-from': 'db-move' } },
    spec: { containers: [{ name: 'db', image: 'x', command: ['/db', '--serve'] }] } };
}

const noTools = missing({ tools: ['openssl'] }, 'webhook HTTPS server');

describe.skipIf(noTools)('webhook HTTPS server', () => {
  let dir: string;
  let srv: WebhookServer;
  let ca: Buffer;
  const store = new MemStore();

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-webhook-'));
    const { cert, key } = makeCert(dir);
    ca = fs.readFileSync(cert);
    srv = await startWebhookServer({ addr: '127.0.0.1:0', tls: { certFile: cert, keyFile: key }, store, config: DEFAULT_WEBHOOK_CONFIG, logger: silentLogger() });
  });
  afterAll(async () => {
    await srv?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers /healthz over TLS', async () => {
    const r = await new Promise<number>((resolve, reject) => https.get(`${srv.url}/healthz`, { ca }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject));
    expect(r).toBe(200);
  });

  it('admits a restore pod with a base64 JSONPatch and claims the checkpoint once', async () => {
    store.put(structuredClone(CKPT));
    const rq = review(pod('db-1'));
    const r = await postReview(srv.url, ca, rq);
    expect(r.status).toBe(200);
    expect(r.json.apiVersion).toBe('admission.k8s.io/v1');
    expect(r.json.kind).toBe('AdmissionReview');
    expect(r.json.response.uid).toBe(rq.request.uid);
    expect(r.json.response.allowed).toBe(true);
    expect(r.json.response.patchType).toBe('JSONPatch');
    const patch = JSON.parse(Buffer.from(r.json.response.patch, 'base64').toString('utf8'));
    const mutated = applyJsonPatch(pod('db-1'), patch);
    expect(mutated.spec!.containers[0]!.command!.slice(-3)).toEqual(['--', '/db', '--serve']);
    const cp = await store.get('prod', 'db-move');
    expect(cp!.status!.restoredPod).toMatchObject({ name: 'db-1', nodeName: 'node-a' });

    // a second pod is denied with the reason; the kubectl user sees the message
    const r2 = await postReview(srv.url, ca, review(pod('db-2')));
    expect(r2.json.response.allowed).toBe(false);
    expect(r2.json.response.status.code).toBe(403);
    expect(r2.json.response.status.message).toContain('already restored by pod "db-1"');

    // the first pod again (reinvocation) is allowed
    const r3 = await postReview(srv.url, ca, review(mutated));
    expect(r3.json.response.allowed).toBe(true);
    expect(r3.json.response.patch).toBeUndefined();
  });

  it('loses a claim race cleanly: re-reads after 409 and denies', async () => {
    store.put(structuredClone(CKPT));
    store.beforeClaim = () => {
      store.beforeClaim = undefined;
      // another webhook replica claims it first
      const cur = store.objs.get('prod/db-move')!;
      store.put({ ...structuredClone(cur), status: { ...structuredClone(cur.status), restoredPod: { name: 'winner' } } });
    };
    const r = await postReview(srv.url, ca, review(pod('loser')));
    expect(r.json.response.allowed).toBe(false);
    expect(r.json.response.status.message).toContain('already restored by pod "winner"');
  });

  it('does not claim on a dry run', async () => {
    store.put(structuredClone(CKPT));
    const before = store.claims;
    const r = await postReview(srv.url, ca, review(pod('dry'), { dryRun: true }));
    expect(r.json.response.allowed).toBe(true);
    expect(store.claims).toBe(before);
    expect((await store.get('prod', 'db-move'))!.status!.restoredPod).toBeUndefined();
  });

  it('lets pods without the annotation through untouched and denies annotated pods when the store fails', async () => {
    const plain = pod('plain');
    delete plain.metadata!.annotations;
    const r = await postReview(srv.url, ca, review(plain));
    expect(r.json.response).toEqual({ uid: expect.any(String), allowed: true });
    const broken = store.get;
    store.get = async () => { throw new Error('connect ECONNREFUSED 10.0.0.1:443'); };
    try {
      const r2 = await postReview(srv.url, ca, review(pod('x')));
      expect(r2.json.response.allowed).toBe(false);
      expect(r2.json.response.status.message).toContain('ECONNREFUSED');
    } finally {
      store.get = broken;
    }
  });

  it.each([
    ['not JSON', '{nope', 'not JSON'],
    ['a v1beta1 review', { apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'u' } }, 'admission.k8s.io/v1'],
    ['no uid', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {} }, 'request.uid'],
  ])('answers 400 to %s', async (_n, body, msg) => {
    const r = await postReview(srv.url, ca, body);
    expect(r.status).toBe(400);
    expect(r.text).toContain(msg);
  });
});
