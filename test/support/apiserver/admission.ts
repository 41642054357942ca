/**
 * Admission webhooks, called the way kube-apiserver calls them: every MutatingWebhookConfiguration's webhooks
 * (in name order) before the object is completed and validated (on CREATE: no uid, no creationTimestamp, no
 * generated name yet), then every ValidatingWebhookConfiguration's on the final object, for requests matching their `rules`,
 * `namespaceSelector` and `objectSelector`; an AdmissionReview (admission.k8s.io/v1) is POSTed over HTTPS
 * (verified against `caBundle`) to `clientConfig.url`, or to `clientConfig.service` resolved through
 * `serviceUrls['<namespace>/<name>']` + `service.path`. JSONPatch responses are applied. `failurePolicy`
 * (default Fail), `timeoutSeconds` (default 10) and `sideEffects` are honoured; reinvocation is not.
 * Webhooks are never called for admissionregistration.k8s.io objects, as upstream.
 */
import http from 'node:http';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import type { ApiCore, AdmissionHook } from './api.js';
import { ApiStatusError } from './status.js';
import { jsonPatch, PatchError, type Json } from './patch.js';
import { matchLabelSelectorObject } from './selectors.js';
import type { Obj } from './store.js';
import type { ResourceType } from './resources.js';

interface Rule { operations?: string[]; apiGroups?: string[]; apiVersions?: string[]; resources?: string[]; scope?: string }

function ruleMatches(r: Rule, t: ResourceType, op: string, sub: string | undefined): boolean {
  const has = (list: string[] | undefined, v: string) => (list ?? []).some((x) => x === '*' || x === v);
  if (!has(r.operations, op)) return false;
  if (!has(r.apiGroups, t.group)) return false;
  if (!has(r.apiVersions, t.version)) return false;
  const res = sub ? `${t.resource}/${sub}` : t.resource;
  const resOk = (r.resources ?? []).some((x) => x === res || x === '*/*' || (x === '*' && !sub) || (sub && x === `*/${sub}`) || (sub && x === `${t.resource}/*`));
  if (!resOk) return false;
  const scope = r.scope ?? '*';
  if (scope === 'Namespaced' && !t.namespaced) return false;
  if (scope === 'Cluster' && t.namespaced) return false;
  return true;
}

function post(url: string, body: string, caBundle: string | undefined, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const lib = u.protocol === 'https:' ? https : http;
    const req = lib.request(u, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Accept: 'application/json' },
      ca: caBundle ? Buffer.from(caBundle, 'base64') : undefined,
      timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`context deadline exceeded (Client.Timeout ${timeoutMs}ms)`)));
    req.on('error', reject);
    req.end(body);
  });
}

export function makeAdmission(core: ApiCore, opts: { serviceUrls: Readonly<Record<string, string>> }): AdmissionHook {
  return async (req) => {
    const { type: t } = req;
    if (t.group === 'admissionregistration.k8s.io') return undefined;
    let object = req.object;
    let mutated = false;
    for (const kind of [req.phase === 'mutating' ? 'MutatingWebhookConfiguration' : 'ValidatingWebhookConfiguration'] as const) {
      const cfgType = core.typeForKind('admissionregistration.k8s.io/v1', kind)!;
      const configs = core.store.list(cfgType.storageKey).sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
      for (const cfg of configs) {
        for (const wh of (cfg.webhooks ?? []) as Obj[]) {
          if (!((wh.rules ?? []) as Rule[]).some((r) => ruleMatches(r, t, req.operation, req.subresource))) continue;
          const subject = object ?? req.oldObject;
          if (t.namespaced) {
            const nsType = core.typeFor('', 'v1', 'namespaces')!;
            const nsObj = core.store.get(nsType.storageKey, '', req.namespace);
            if (!matchLabelSelectorObject(wh.namespaceSelector, nsObj?.metadata?.labels)) continue;
          } else if (t.resource === 'namespaces' && !matchLabelSelectorObject(wh.namespaceSelector, subject?.metadata?.labels)) continue;
          const objLabelsOk = [object, req.oldObject].some((o) => o && matchLabelSelectorObject(wh.objectSelector, o.metadata?.labels));
          if (!objLabelsOk) continue;
          if (req.dryRun && !['None', 'NoneOnDryRun'].includes(String(wh.sideEffects ?? 'None'))) {
            throw new ApiStatusError(400, 'BadRequest', `admission webhook "${wh.name}" does not support dry run`);
          }
          const uid = randomUUID();
          const gvk = { group: t.group, version: t.version, kind: t.kind };
          const gvr = { group: t.group, version: t.version, resource: t.resource };
          const review = {
            apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview',
            request: {
              uid, kind: gvk, resource: gvr, requestKind: gvk, requestResource: gvr,
              ...(req.subresource ? { subResource: req.subresource, requestSubResource: req.subresource } : {}),
              name: req.name || (object?.metadata?.name ?? ''), namespace: t.namespaced ? req.namespace : undefined,
              operation: req.operation, userInfo: { username: 'fake-apiserver-user', groups: ['system:authenticated'] },
              object: object ?? null, oldObject: req.oldObject ?? null, dryRun: req.dryRun,
              options: { kind: `${req.operation === 'CREATE' ? 'Create' : req.operation === 'UPDATE' ? 'Update' : 'Delete'}Options`, apiVersion: 'meta.k8s.io/v1' },
            },
          };
          const cc = (wh.clientConfig ?? {}) as Obj;
          let url: string | undefined = cc.url;
          if (!url && cc.service) {
            const base = opts.serviceUrls[`${cc.service.namespace}/${cc.service.name}`];
            if (base) url = base.replace(/\/$/, '') + (cc.service.path ?? '');
          }
          const failOpen = wh.failurePolicy === 'Ignore';
          const fail = (why: string): never => {
            throw new ApiStatusError(500, 'InternalError', `Internal error occurred: failed calling webhook "${wh.name}": ${why}`,
              { causes: [{ message: `failed calling webhook "${wh.name}": ${why}` }] });
          };
          let resp: Obj;
          try {
            if (!url) throw new Error(`no URL for webhook service ${cc.service?.namespace}/${cc.service?.name} (set webhookServiceUrls)`);
            const r = await post(url, JSON.stringify(review), cc.caBundle, (wh.timeoutSeconds ?? 10) * 1000);
            if (r.status < 200 || r.status > 299) throw new Error(`received invalid webhook response: expected response code 200, got ${r.status}`);
            const parsed = JSON.parse(r.text) as Obj;
            if (!parsed.response || parsed.response.uid !== uid) throw new Error(`expected response.uid="${uid}", got "${parsed.response?.uid}"`);
            resp = parsed.response;
          } catch (e) {
            if (failOpen) continue;
            return fail(`failed to call webhook: ${(e as Error).message}`);
          }
          if (!resp.allowed) {
            const st = (resp.status ?? {}) as Obj;
            const code = Number(st.code) || 400;
            throw new ApiStatusError(code, st.reason ?? '', `admission webhook "${wh.name}" denied the request${st.message ? `: ${st.message}` : ' without explanation'}`);
          }
          if (resp.patch && kind === 'MutatingWebhookConfiguration' && object) {
            if (resp.patchType !== 'JSONPatch') return fail(`unsupported patch type "${resp.patchType}"`);
            try {
              object = jsonPatch(object as Json, JSON.parse(Buffer.from(resp.patch, 'base64').toString('utf8'))) as Obj;
              mutated = true;
            } catch (e) {
              if (e instanceof PatchError || e instanceof SyntaxError) return fail(`failed to apply patch: ${e.message}`);
              throw e;
            }
          }
        }
      }
    }
    return mutated ? object : undefined;
  };
}
