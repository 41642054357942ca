/**
 * The restore webhook's HTTPS server: AdmissionReview v1 on POST /mutate-pods, plus /healthz and
 * /readyz. The decision itself is the pure `decideRestore` (mutate.ts); this file only parses the
 * review, fetches the checkpoint, claims it (status.restoredPod) and encodes the answer.
 *
 * Failure policy: register the MutatingWebhookConfiguration with `failurePolicy: Fail` for pod
 * CREATE (see mutate.ts for why), `sideEffects: NoneOnDryRun` (a dry-run admission never claims
 * the checkpoint) and `reinvocationPolicy: IfNeeded` (re-admission is idempotent). Inside the
 * handler the same choice holds: any error while looking at an annotated pod denies it with the
 * error's text; pods without the annotation are always allowed without an API call.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { randomInt } from 'node:crypto';
import type { V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../log/logger.js';
import { ConflictError, type CheckpointStore } from './checkpoints.js';
import { decideRestore, restoreTarget, type Decision, type WebhookConfig } from './mutate.js';
import { matchCandidates, matchCheckpoint } from './match.js';
import { staleClaim, type LockCheckpoint } from '../api/index.js';
import { migratePolicy, stopCheckpoint, stopCheckpointName, stopMessage, stopProgress, wantsCheckpoint, type StopKind, type StopOutcome } from './stop.js';
import type { EventRecorder } from '../kube/events.js';

/** The API server caps request bodies at 3 MiB; a bigger one is not from it. */
const MAX_BODY = 3 * 1024 * 1024;
const CLAIM_ATTEMPTS = 3;

export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly status?: { readonly code: number; readonly message: string; readonly reason?: string };
  readonly patchType?: 'JSONPatch';
  readonly patch?: string;
  readonly warnings?: readonly string[];
}

export class BadReviewError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadReviewError';
  }
}

interface AdmissionRequest {
  uid: string;
  name?: string;
  namespace?: string;
  operation?: string;
  subResource?: string;
  dryRun?: boolean;
  object?: V1Pod;
  oldObject?: V1Pod;
  kind?: { group?: string; version?: string; kind?: string };
}

function parseReview(body: unknown): AdmissionRequest {
  const b = body as { apiVersion?: unknown; kind?: unknown; request?: unknown };
  if (typeof b !== 'object' || b === null) throw new BadReviewError('body is not a JSON object');
  if (b.kind !== 'AdmissionReview') throw new BadReviewError(`kind must be AdmissionReview, got ${JSON.stringify(b.kind)}`);
  if (b.apiVersion !== 'admission.k8s.io/v1') throw new BadReviewError(`apiVersion must be admission.k8s.io/v1 (register the webhook with admissionReviewVersions: [v1]), got ${JSON.stringify(b.apiVersion)}`);
  const r = b.request as AdmissionRequest | undefined;
  if (typeof r !== 'object' || r === null || typeof r.uid !== 'string' || r.uid === '') throw new BadReviewError('request.uid is missing');
  return r;
}

/** Reads the stop hook needs: the pod an eviction names, and its namespace's labels. */
export interface PodSource {
  get(namespace: string, name: string): Promise<V1Pod | undefined>;
  namespaceLabels(namespace: string): Promise<Readonly<Record<string, string>>>;
}

export interface ReviewDeps {
  readonly store: CheckpointStore;
  readonly config: WebhookConfig;
  readonly logger: Logger;
  readonly now?: () => Date;
  readonly randomSuffix?: () => string;
  /** for /stop-pods */
  readonly pods?: PodSource;
  readonly events?: EventRecorder;
  /** how long a stop request waits for its checkpoint (default 10 s; keep it under the webhook timeout) */
  readonly stopWaitMs?: number;
}

/** apiserver's generateName alphabet (no vowels, no confusable digits) */
function defaultSuffix(): string {
  const a = 'bcdfghjklmnpqrstvwxz2456789';
  let s = '';
  for (let i = 0; i < 5; i++) s += a[randomInt(a.length)];
  return s;
}

/**
 * The checkpoint as a new restore pod may see it: when its claim lapsed (the claimed pod is gone
 * and never held the locks, api/claim.ts) without restoredPod, restore and the Restoring phase.
 * Costs one pod GET, only for a claimed checkpoint that is not this pod's own re-invocation.
 */
async function withLapsedClaim(cp: LockCheckpoint | undefined, podName: string, deps: ReviewDeps): Promise<{ cp: LockCheckpoint | undefined; lapsed?: string }> {
  const st = cp?.status;
  const rp = st?.restoredPod;
  if (!cp || !st || !rp?.name || !deps.pods || st.phase === 'Failed') return { cp };
  if (rp.name === podName && !rp.uid) return { cp }; // a re-invocation for the claiming pod
  if (st.restore?.state === 'Held') return { cp };
  const claimed = await deps.pods.get(cp.metadata.namespace, rp.name);
  const lapsed = staleClaim(st, claimed ?? null, (deps.now?.() ?? new Date()).getTime());
  if (!lapsed) return { cp };
  const { restoredPod: _rp, restore: _rr, ...rest } = st;
  const phase = st.agent?.state === 'HandoverReady' ? 'HandoverReady' : 'Dumped';
  return { cp: { ...cp, status: { ...rest, phase } }, lapsed };
}

/** Handle one AdmissionRequest; never throws (an internal failure denies the annotated pod). */
export async function admit(req: AdmissionRequest, deps: ReviewDeps): Promise<AdmissionResponse> {
  const uid = req.uid;
  const pod = req.object;
  const allow: AdmissionResponse = { uid, allowed: true };
  if (req.operation !== undefined && req.operation !== 'CREATE') return allow;
  if (!pod || (req.kind?.kind !== undefined && req.kind.kind !== 'Pod')) return allow;
  const namespace = pod.metadata?.namespace || req.namespace || 'default';
  const target = restoreTarget(pod, namespace);
  if (target.kind === 'none') return admitMatched(req, pod, namespace, deps);
  const podName = pod.metadata?.name || `${pod.metadata?.generateName ?? ''}*`;
  const log = deps.logger.child({ namespace, pod: podName, checkpoint: target.kind === 'checkpoint' ? target.name : undefined });
  const denyWith = (message: string, code = 403): AdmissionResponse => {
    log.warn('restore pod denied', { reason: message });
    return { uid, allowed: false, status: { code, message: `lockmig: ${message}`, reason: code === 403 ? 'Forbidden' : 'InternalError' } };
  };
  const suffix = (deps.randomSuffix ?? defaultSuffix)();
  try {
    for (let attempt = 1; ; attempt++) {
      const read = target.kind === 'checkpoint' ? await deps.store.get(target.namespace, target.name) : undefined;
      const { cp, lapsed } = await withLapsedClaim(read, pod.metadata?.name ?? '', deps);
      if (lapsed) log.warn('the checkpoint\'s claim lapsed: restoring into this pod instead', { lapsed });
      const d: Decision = decideRestore(pod, cp, deps.config, {
        now: (deps.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z'), randomSuffix: suffix, namespace,
      });
      if (!d.allowed) return denyWith(d.message ?? 'denied');
      if (d.restoredPod && cp && !req.dryRun) {
        try {
          await deps.store.claim(cp.metadata.namespace, cp.metadata.name, cp.metadata.resourceVersion, d.restoredPod);
        } catch (err) {
          if (err instanceof ConflictError && attempt < CLAIM_ATTEMPTS) continue; // re-read and decide again
          throw err;
        }
      }
      log.info('restore pod admitted', { wrapped: d.patch?.length ?? 0, dryRun: req.dryRun === true, message: d.message });
      return {
        uid, allowed: true,
        ...(d.patch && d.patch.length > 0 ? { patchType: 'JSONPatch' as const, patch: Buffer.from(JSON.stringify(d.patch)).toString('base64') } : {}),
      };
    }
  } catch (err) {
    return denyWith(`cannot admit restore pod: ${(err as Error).message}`, 500);
  }
}

/**
 * A pod that names no checkpoint: restored only when a checkpoint's target policy picks it
 * (match.ts, read from the cache: no API call for every other pod). Never denied: whatever keeps
 * it from being restored admits it unchanged, with a warning kubectl shows.
 */
async function admitMatched(req: AdmissionRequest, pod: V1Pod, namespace: string, deps: ReviewDeps): Promise<AdmissionResponse> {
  const uid = req.uid;
  const allow: AdmissionResponse = { uid, allowed: true };
  const cached = deps.store.list?.(namespace);
  if (!cached || cached.length === 0) return allow;
  const self = { ...pod, metadata: { ...pod.metadata, namespace } };
  // unclaimed candidates first; one whose claim lapsed (its restore pod is gone) only after
  // a look at that pod
  let candidate = matchCheckpoint(self, cached);
  if (!candidate) {
    for (const c of matchCandidates(self, cached, { includeClaimed: true })) {
      if ((await withLapsedClaim(c, pod.metadata?.name ?? '', deps).catch(() => ({ lapsed: undefined }))).lapsed) {
        candidate = c;
        break;
      }
    }
  }
  if (!candidate) return allow;
  const podName = pod.metadata?.name || `${pod.metadata?.generateName ?? ''}*`;
  const log = deps.logger.child({ namespace, pod: podName, checkpoint: candidate.metadata.name });
  const suffix = (deps.randomSuffix ?? defaultSuffix)();
  try {
    for (let attempt = 1; ; attempt++) {
      // decide on the current object (the cache may lag), and only if it still matches
      const { cp, lapsed } = await withLapsedClaim(await deps.store.get(namespace, candidate.metadata.name), pod.metadata?.name ?? '', deps);
      if (!cp || !matchCheckpoint(self, [cp])) return allow;
      if (lapsed) log.warn('the checkpoint\'s claim lapsed: restoring into this pod instead', { lapsed });
      const d = decideRestore(pod, cp, deps.config, {
        now: (deps.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z'), randomSuffix: suffix, namespace, matched: true,
      });
      if (d.notRestored) {
        log.warn('replacement pod admitted without its locks', { reason: d.notRestored });
        return { ...allow, warnings: [`lockmig: pod not restored from LockCheckpoint ${namespace}/${cp.metadata.name}: ${d.notRestored}`] };
      }
      if (d.restoredPod && !req.dryRun) {
        try {
          await deps.store.claim(namespace, cp.metadata.name, cp.metadata.resourceVersion, d.restoredPod);
        } catch (err) {
          if (err instanceof ConflictError && attempt < CLAIM_ATTEMPTS) continue;
          throw err;
        }
      }
      log.info('replacement pod matched and admitted', { policy: cp.spec.target?.policy, dryRun: req.dryRun === true, message: d.message });
      return {
        uid, allowed: true,
        ...(d.patch && d.patch.length > 0 ? { patchType: 'JSONPatch' as const, patch: Buffer.from(JSON.stringify(d.patch)).toString('base64') } : {}),
        warnings: [`lockmig: restoring the locks of LockCheckpoint ${namespace}/${cp.metadata.name}`],
      };
    }
  } catch (err) {
    log.error('could not restore a matched pod; admitting it unchanged', { error: (err as Error).message });
    return { ...allow, warnings: [`lockmig: pod not restored: ${(err as Error).message}`] };
  }
}

/**
 * /stop-pods (validating: pods DELETE, pods/eviction CREATE): checkpoint an opted-in pod before
 * it is stopped, then allow — always (stop.ts says why).
 */
export async function admitStop(req: AdmissionRequest, deps: ReviewDeps): Promise<AdmissionResponse> {
  const uid = req.uid;
  const allow: AdmissionResponse = { uid, allowed: true };
  try {
    let kind: StopKind;
    let pod: V1Pod | undefined;
    const namespace = req.namespace ?? '';
    if (req.operation === 'DELETE' && !req.subResource) {
      kind = 'delete';
      pod = req.oldObject;
    } else if (req.operation === 'CREATE' && req.subResource === 'eviction') {
      kind = 'eviction';
      pod = req.name ? await deps.pods?.get(namespace, req.name) : undefined;
    } else {
      return allow;
    }
    if (!pod || req.dryRun || !deps.store.create) return allow;
    const policy = migratePolicy(pod, pod.metadata?.labels?.['lockmig.dev/migrate'] ? {} : await deps.pods?.namespaceLabels(namespace) ?? {});
    const want = wantsCheckpoint(pod, kind, policy);
    if (!want.yes) return allow;
    const podRef = `${namespace}/${pod.metadata?.name}`;
    const name = stopCheckpointName(pod);
    const log = deps.logger.child({ namespace, pod: pod.metadata?.name, checkpoint: name, trigger: kind });
    const t0 = Date.now();
    const created = await deps.store.create(namespace, stopCheckpoint({ ...pod, metadata: { ...pod.metadata, namespace } }, kind));
    log.info(created ? 'checkpoint created before the pod stops' : 'checkpoint exists already', { policy });
    const waitMs = deps.stopWaitMs ?? 10_000;
    let outcome: StopOutcome | undefined;
    let last;
    while (!outcome) {
      last = await deps.store.get(namespace, name);
      outcome = stopProgress(last);
      if (outcome || Date.now() - t0 >= waitMs) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    outcome ??= { state: 'timeout', ...(last ? { checkpoint: last } : {}) };
    const msg = stopMessage(podRef, kind, outcome, Date.now() - t0);
    log[msg.ok ? 'info' : 'warn'](msg.ok ? 'locks recorded; letting the pod stop' : 'letting the pod stop without its locks recorded', { state: outcome.state, waitedMs: Date.now() - t0 });
    const podObj = { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name ?? '', namespace, ...(pod.metadata?.uid ? { uid: pod.metadata.uid } : {}) };
    void deps.events?.record(podObj, msg.ok ? 'Normal' : 'Warning', msg.ok ? 'LocksCheckpointed' : 'LocksNotCheckpointed', msg.warning.replace(/^lockmig: /, ''));
    return { ...allow, warnings: [msg.warning] };
  } catch (err) {
    deps.logger.error('stop hook failed; letting the pod stop', { error: (err as Error).message, namespace: req.namespace, name: req.name });
    return { ...allow, warnings: [`lockmig: could not record the locks before this ${req.subResource === 'eviction' ? 'eviction' : 'deletion'}: ${(err as Error).message}`] };
  }
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) {
        reject(new BadReviewError(`request body exceeds ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export interface WebhookServerOptions extends ReviewDeps {
  /** host:port or :port (default :9443) */
  readonly addr?: string;
  /** PEM files; reloaded when they change (cert-manager rotates them in place) */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** how often to check the TLS files for changes (ms); default 60 s */
  readonly tlsReloadMs?: number;
  /** readiness besides not stopping (e.g. the checkpoint cache has synced) */
  readonly ready?: () => boolean;
}

export interface WebhookServer {
  readonly url: string;
  readonly port: number;
  /**
   * Graceful stop: /readyz answers 503 at once (the endpoint leaves the Service), requests keep
   * being served for `drainMs` (the API server may still send some), then the listener closes and
   * in-flight requests — a stop request waits up to --stop-wait for its checkpoint — get until
   * `graceMs` to finish before their connections are cut.
   */
  close(opts?: { drainMs?: number; graceMs?: number }): Promise<void>;
  /** number of admission requests being handled */
  readonly inFlight: number;
}

export function parseAddr(addr: string): { host?: string; port: number } {
  const i = addr.lastIndexOf(':');
  if (i < 0) throw new Error(`address must be [host]:port, got "${addr}"`);
  const port = Number(addr.slice(i + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port in address "${addr}"`);
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  return host ? { host, port } : { port };
}

export async function startWebhookServer(opts: WebhookServerOptions): Promise<WebhookServer> {
  const { host, port } = parseAddr(opts.addr ?? ':9443');
  let stopping = false;
  let inFlight = 0;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && url === '/readyz') {
      const ready = !stopping && (opts.ready?.() ?? true);
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ok\n' : (stopping ? 'stopping\n' : 'not ready\n'));
      return;
    }
    if (req.method === 'GET' && (url === '/healthz' || url === '/livez')) {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    // /mutate-pods is the documented path; /mutate is accepted too (older chart revisions).
    if (url !== '/mutate-pods' && url !== '/mutate' && url !== '/stop-pods') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'POST' }).end('POST an AdmissionReview\n');
      return;
    }
    inFlight++;
    res.once('close', () => { inFlight--; });
    readBody(req)
      .then(async (buf) => {
        let body: unknown;
        try {
          body = JSON.parse(buf.toString('utf8'));
        } catch (err) {
          throw new BadReviewError(`body is not JSON: ${(err as Error).message}`);
        }
        const request = parseReview(body);
        const response = url === '/stop-pods' ? await admitStop(request, opts) : await admit(request, opts);
        res.writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }));
      })
      .catch((err: unknown) => {
        const bad = err instanceof BadReviewError;
        opts.logger.warn('bad admission request', { error: (err as Error).message });
        if (!res.headersSent) res.writeHead(bad ? 400 : 500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
      });
  };

  let server: http.Server | https.Server;
  let timer: NodeJS.Timeout | undefined;
  if (opts.tls) {
    const { certFile, keyFile } = opts.tls;
    const load = () => ({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
    const s = https.createServer(load(), handler);
    server = s;
    let stamp = `${fs.statSync(certFile).mtimeMs}/${fs.statSync(keyFile).mtimeMs}`;
    timer = setInterval(() => {
      try {
        const now = `${fs.statSync(certFile).mtimeMs}/${fs.statSync(keyFile).mtimeMs}`;
        if (now === stamp) return;
        s.setSecureContext(load());
        stamp = now;
        opts.logger.info('reloaded TLS certificate', { certFile });
      } catch (err) {
        opts.logger.warn('cannot reload TLS certificate; keeping the old one', { error: (err as Error).message });
      }
    }, opts.tlsReloadMs ?? 60_000);
    timer.unref();
  } else {
    server = http.createServer(handler);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const h = a.family === 'IPv6' ? `[${a.address === '::' ? '::1' : a.address}]` : a.address === '0.0.0.0' ? '127.0.0.1' : a.address;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${h}:${a.port}`,
    port: a.port,
    get inFlight() { return inFlight; },
    close: async (o = {}) => {
      stopping = true;
      if (o.drainMs) await new Promise((r) => setTimeout(r, o.drainMs));
      if (timer) clearInterval(timer);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections?.();
      const deadline = Date.now() + (o.graceMs ?? 0);
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      server.closeAllConnections?.();
      await closed;
    },
  };
}
