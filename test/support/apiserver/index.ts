/**
 * In-memory Kubernetes API server for tests. It speaks the real REST API over HTTP or HTTPS, so the real
 * `@kubernetes/client-node` code (typed APIs, KubernetesObjectApi, Watch, makeInformer/ListWatch) runs against it.
 *
 * ```ts
 * import { startFakeApiServer } from '../support/apiserver/index.js';
 * import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
 *
 * const srv = await startFakeApiServer({ crds: ['crds/lockmig.dev_lockcheckpoints.yaml'] });
 * const core = srv.kubeConfig.makeApiClient(CoreV1Api);        // or: KUBECONFIG=srv.kubeconfigPath for a child process
 * await core.createNamespace({ body: { metadata: { name: 'demo' } } });
 * await srv.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'demo' }, spec: { containers: [{ name: 'c', image: 'x' }] } });
 * srv.injectFailure({ method: 'PUT', code: 409, times: 1 });   // next PUT answers 409 Conflict
 * srv.compact();                                               // history gone: watches get ERROR 410, old RVs answer 410
 * await srv.close();                                           // ends every watch and connection
 * ```
 *
 * What it implements (and how it differs from a real kube-apiserver):
 * - Discovery: `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>` (with `<r>/status` subresources), `/version`,
 *   an empty `/openapi/v2` (JSON, or gnostic protobuf for kubectl, which then skips client-side validation) and
 *   `/openapi/v3`. No aggregated discovery (clients fall back to the legacy documents). kubectl works against it
 *   (get/apply/apply --server-side/patch/label/delete/watch); `kubectl get` prints CRD additionalPrinterColumns.
 * - Types: core pods, events, namespaces, configmaps, secrets, serviceaccounts, services, nodes, persistentvolumeclaims;
 *   apps deployments/daemonsets; coordination.k8s.io leases; events.k8s.io events (one storage with core events, as
 *   upstream, so `kubectl describe` sees both); apiextensions.k8s.io CRDs (creating one installs its types at once,
 *   deleting one removes its objects); admissionregistration mutating/validating webhook configurations (called).
 * - Object rules: uid, creationTimestamp, generation (bumped when anything but metadata — and status, for types with
 *   a status subresource — changes), one global resourceVersion counter, generateName, 409 AlreadyExists / Conflict,
 *   404 NotFound, 422 Invalid with field causes, the status subresource (main writes keep status, status writes keep the
 *   rest), finalizers + deletionTimestamp (DELETE answers 202 while finalizers remain; removing the last one deletes),
 *   no-op writes keep the resourceVersion and send no event, namespaces must exist, per-type AllowUnconditionalUpdate
 *   (custom resources, leases, CRDs need metadata.resourceVersion on PUT) and AllowCreateOnUpdate (leases, events),
 *   pod spec immutability and the common pod defaults, events.k8s.io required fields. Pods are deleted at once (no
 *   kubelet, no grace period); propagationPolicy is ignored (no garbage collector); deleting a namespace deletes its
 *   objects at once; no RBAC, quota or managedFields.
 * - Patches: JSON patch (RFC 6902, the default content type of client-node 1.4's typed patch calls — pass
 *   `setHeaderOptions('Content-Type', PatchStrategy.MergePatch)` for a merge patch), merge patch (RFC 7386), strategic
 *   merge patch for built-in types (merge keys of the common pod fields, `$patch` directives; 415 for custom resources as
 *   upstream), apply patch (`application/apply-patch+yaml`, needs `fieldManager`; simplified to a merge, no field
 *   ownership or conflicts).
 * - List/watch: label selectors (=, ==, !=, in, notin, exists, !key, gt, lt), field selectors (metadata.name,
 *   metadata.namespace, plus per-type fields such as spec.nodeName/status.phase for pods and CRD selectableFields),
 *   limit/continue (consistent snapshots), resourceVersion + resourceVersionMatch=Exact, watch replay from a
 *   resourceVersion, synthetic ADDED events for a watch without one, BOOKMARKs (`allowWatchBookmarks`; note that
 *   client-node's ListWatch never asks for them), sendInitialEvents, timeoutSeconds, 410 Gone as an ERROR event on a
 *   watch and as HTTP 410 on a list. Objects leaving a selector are sent as DELETED, entering as ADDED (as the watch
 *   cache does).
 * - Custom resources: structural schema defaulting, null dropping, pruning (Warning headers; 400 under
 *   fieldValidation=Strict) and validation with upstream-shaped messages; `x-kubernetes-validations` CEL through a small
 *   evaluator (see cel.ts): rules it cannot compile are SKIPPED with a process warning (listed in `celWarnings`),
 *   whereas a real server enforces them. No validation ratcheting.
 * - Admission: MutatingWebhookConfigurations run before the object gets uid/creationTimestamp/generated name, then
 *   ValidatingWebhookConfigurations on the final object; each matching webhook with a `clientConfig.url` (or a
 *   `clientConfig.service` mapped by `opts.webhookServiceUrls`) gets an AdmissionReview v1 over HTTPS verified against
 *   `caBundle`; JSONPatch responses are applied; `failurePolicy`, `objectSelector`, `namespaceSelector` are honoured.
 * - Auth: bearer token. A wrong token is always refused (401); HTTPS requires it; plain HTTP also accepts requests
 *   without one, because kubectl (client-go) will not send a token over plain HTTP.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import YAML from 'yaml';
import { KubeConfig } from '@kubernetes/client-node';
import { ApiCore } from './api.js';
import { FakeHttpServer, type FailureHandle, type FailureSpec, type RequestRecord } from './server.js';
import { generateSelfSignedCert } from './tls.js';
import { ApiStatusError } from './status.js';
import type { Obj } from './store.js';
import type { CelWarning } from './schema.js';
import { makeAdmission } from './admission.js';

export { generateSelfSignedCert, type SelfSignedCert, type CertOptions } from './tls.js';
export { ApiStatusError } from './status.js';
export type { FailureSpec, FailureHandle, RequestRecord } from './server.js';
export type { Obj } from './store.js';

export interface FakeApiServerOptions {
  /** Serve HTTPS with a fresh self-signed certificate (the kubeconfig carries it as CA data). */
  https?: boolean;
  /** Serve HTTPS with this certificate/key instead (implies https); the certificate must be its own CA. */
  tls?: { readonly certPem: string; readonly keyPem: string };
  /** CRD YAML files to install at start (multi-document files allowed). */
  crds?: readonly string[];
  /** Interval of BOOKMARK events on watches that ask for them (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /** Keep at most this many events of history; older resourceVersions then answer 410 Gone (default 100000). */
  compactAfter?: number;
  /** Bearer token the kubeconfig uses and the server requires (default: random). */
  token?: string;
  /** Namespace of the kubeconfig context (default `default`). */
  namespace?: string;
  /** Maps `namespace/name` of a webhook's clientConfig.service to a base URL (e.g. `https://127.0.0.1:9443`). */
  webhookServiceUrls?: Readonly<Record<string, string>>;
}

export interface FakeApiServer {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  /** A client-node KubeConfig pointing at the server. */
  readonly kubeConfig: KubeConfig;
  /** The same configuration written to a file (for child processes: KUBECONFIG or --kubeconfig). */
  readonly kubeconfigPath: string;
  /** The server certificate (its own CA) when https is on. */
  readonly caPem?: string;
  readonly token: string;
  /** Every request received, in order. */
  readonly requests: RequestRecord[];
  /** CEL rules that were skipped because the evaluator could not compile them. */
  readonly celWarnings: readonly CelWarning[];
  /** Ends all watches and connections and removes the kubeconfig file. */
  close(): Promise<void>;

  // --- store-level helpers (same rules as the REST API: validation, versions, watch events) ---
  create(obj: Obj): Promise<Obj>;
  get(apiVersion: string, kind: string, name: string, namespace?: string): Obj | undefined;
  list(apiVersion: string, kind: string, namespace?: string): Obj[];
  /** Replace; resourceVersion optional (unconditional) unless the type requires it. */
  update(obj: Obj): Promise<Obj>;
  /** Replace only the status (status subresource). */
  updateStatus(obj: Obj): Promise<Obj>;
  /** JSON merge patch; `status: true` targets the status subresource. */
  mergePatch(apiVersion: string, kind: string, name: string, namespace: string | undefined, patch: unknown, opts?: { status?: boolean }): Promise<Obj>;
  /** Deletes (or marks for deletion when finalizers remain). Returns undefined if it did not exist. */
  delete(apiVersion: string, kind: string, name: string, namespace?: string): Promise<Obj | undefined>;
  /** Installs a CRD from a YAML file or object. */
  applyCrd(fileOrObject: string | Obj): Promise<void>;

  /** Current global resourceVersion. */
  resourceVersion(): string;
  /** Forgets history: resourceVersions older than now answer 410; open watches get ERROR 410 and end (unless keepWatches). */
  compact(opts?: { keepWatches?: boolean }): void;
  /** Ends all watch streams cleanly (clients reconnect from their last resourceVersion). */
  dropWatches(): void;
  /** Number of open watch streams. */
  activeWatches(): number;
  /** Makes the next matching request(s) fail. */
  injectFailure(spec: FailureSpec): FailureHandle;
}

function resolveType(core: ApiCore, apiVersion: string, kind: string) {
  const t = core.typeForKind(apiVersion, kind);
  if (!t) throw new Error(`fake apiserver: no type ${apiVersion} ${kind}`);
  return t;
}

export async function startFakeApiServer(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
  const core = new ApiCore({ maxHistory: opts.compactAfter ?? 100_000 });
  const token = opts.token ?? randomBytes(16).toString('hex');
  const cert = opts.tls ?? (opts.https ? generateSelfSignedCert({ hosts: ['127.0.0.1', 'localhost'] }) : undefined);
  const http = new FakeHttpServer(core, {
    tls: cert ? { cert: cert.certPem, key: cert.keyPem } : undefined,
    token, bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 1000, host: '127.0.0.1',
  });
  core.admission = makeAdmission(core, { serviceUrls: opts.webhookServiceUrls ?? {} });

  const applyCrd = async (src: string | Obj): Promise<void> => {
    const docs: Obj[] = typeof src === 'string'
      ? YAML.parseAllDocuments(fs.readFileSync(src, 'utf8')).map((d) => d.toJSON() as Obj).filter((d) => d && d.kind === 'CustomResourceDefinition')
      : [src];
    if (typeof src === 'string' && docs.length === 0) throw new Error(`fake apiserver: no CustomResourceDefinition in ${src}`);
    const t = resolveType(core, 'apiextensions.k8s.io/v1', 'CustomResourceDefinition');
    for (const d of docs) {
      const existing = core.store.get(t.storageKey, '', d.metadata?.name);
      if (existing) await core.update(t, '', d.metadata.name, { ...d, metadata: { ...d.metadata, resourceVersion: existing.metadata.resourceVersion } });
      else await core.create(t, '', d);
    }
  };
  for (const f of opts.crds ?? []) await applyCrd(f);

  const url = await http.listen();
  const namespace = opts.namespace ?? 'default';
  const kcObj = {
    apiVersion: 'v1', kind: 'Config', 'current-context': 'fake',
    clusters: [{ name: 'fake', cluster: cert
      ? { server: url, 'certificate-authority-data': Buffer.from(cert.certPem).toString('base64') }
      : { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'fake', user: { token } }],
    contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace } }],
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-apiserver-'));
  const kubeconfigPath = path.join(dir, 'kubeconfig');
  fs.writeFileSync(kubeconfigPath, YAML.stringify(kcObj), { mode: 0o600 });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);

  const orUndefined = async (p: Promise<Obj>): Promise<Obj | undefined> => {
    try { return await p; } catch (e) { if (e instanceof ApiStatusError && e.code === 404) return undefined; throw e; }
  };

  return {
    url, kubeConfig, kubeconfigPath, caPem: cert?.certPem, token,
    requests: http.requests,
    celWarnings: core.celWarnings,
    async close() {
      await http.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    async create(obj) {
      const t = resolveType(core, obj.apiVersion, obj.kind);
      return (await core.create(t, obj.metadata?.namespace ?? (t.namespaced ? namespace : ''), obj)).obj;
    },
    get(apiVersion, kind, name, ns) {
      const t = resolveType(core, apiVersion, kind);
      const o = core.store.get(t.storageKey, t.namespaced ? ns ?? namespace : '', name);
      return o ? core.present(t, o) : undefined;
    },
    list(apiVersion, kind, ns) {
      const t = resolveType(core, apiVersion, kind);
      return core.store.list(t.storageKey, t.namespaced ? ns : undefined).map((o) => core.present(t, o));
    },
    async update(obj) {
      const t = resolveType(core, obj.apiVersion, obj.kind);
      const ns = t.namespaced ? obj.metadata?.namespace ?? namespace : '';
      const cur = core.store.get(t.storageKey, ns, obj.metadata?.name);
      const body = obj.metadata?.resourceVersion || !cur ? obj : { ...obj, metadata: { ...obj.metadata, resourceVersion: cur.metadata.resourceVersion } };
      return (await core.update(t, ns, obj.metadata?.name, body)).obj;
    },
    async updateStatus(obj) {
      const t = resolveType(core, obj.apiVersion, obj.kind);
      const ns = t.namespaced ? obj.metadata?.namespace ?? namespace : '';
      const cur = core.store.get(t.storageKey, ns, obj.metadata?.name);
      const body = obj.metadata?.resourceVersion || !cur ? obj : { ...obj, metadata: { ...obj.metadata, resourceVersion: cur.metadata.resourceVersion } };
      return (await core.update(t, ns, obj.metadata?.name, body, { subresource: 'status' })).obj;
    },
    async mergePatch(apiVersion, kind, name, ns, patch, o) {
      const t = resolveType(core, apiVersion, kind);
      return (await core.patch(t, t.namespaced ? ns ?? namespace : '', name, 'application/merge-patch+json', JSON.stringify(patch),
        { subresource: o?.status ? 'status' : undefined })).obj;
    },
    async delete(apiVersion, kind, name, ns) {
      const t = resolveType(core, apiVersion, kind);
      return orUndefined(core.delete(t, t.namespaced ? ns ?? namespace : '', name));
    },
    applyCrd,
    resourceVersion: () => String(core.store.currentRV),
    compact(o) {
      core.store.compact();
      if (!o?.keepWatches) http.expireWatches();
    },
    dropWatches: () => http.dropWatches(),
    activeWatches: () => http.activeWatchCount,
    injectFailure: (spec) => http.injectFailure(spec),
  };
}
