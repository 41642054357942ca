/**
 * Request semantics shared by the HTTP layer and the test helpers: create/get/list/update/patch/delete
 * with the rules of kube-apiserver's generic registry (uid, creationTimestamp, generation, resourceVersion,
 * generateName, optimistic concurrency, finalizers + deletionTimestamp, status subresource), CRD installation
 * and custom-resource schema processing.
 */
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  ApiStatusError, RawValue, alreadyExists, badRequest, conflict, fieldErr, invalid, notFound, unsupportedMediaType,
  type FieldError,
} from './status.js';
import { builtinTypes, gvString, typesFromCrd, CrdError, type ResourceType } from './resources.js';
import { Store, ResourceVersionTooOld, type Obj } from './store.js';
import { processCustomResource, type CelWarning } from './schema.js';
import { defaultPod, newNamespaceObject, validateEventsV1, validateMeta, validatePod } from './builtin-rules.js';
import { clone, isObject, jsonPatch, mergePatch, strategicMergePatch, PatchError, type Json } from './patch.js';
import { matchFields, matchLabels, parseFieldSelector, parseLabelSelector } from './selectors.js';
import YAML from 'yaml';

export interface WriteOptions {
  dryRun?: boolean;
  /** `Strict` | `Warn` (default) | `Ignore` */
  fieldValidation?: string;
  fieldManager?: string;
  force?: boolean;
  subresource?: 'status';
}

export interface WriteResult { obj: Obj; warnings: string[]; created?: boolean }

/** Called on create/update of every object; may return a mutated object or throw ApiStatusError (admission). */
export type AdmissionHook = (req: {
  /** mutating webhooks run before the registry fills in system fields and validates; validating ones after. */
  phase: 'mutating' | 'validating';
  type: ResourceType; operation: 'CREATE' | 'UPDATE' | 'DELETE'; object: Obj | undefined; oldObject: Obj | undefined;
  namespace: string; name: string; subresource?: string; dryRun: boolean;
}) => Promise<Obj | undefined>;

export interface ListOptions {
  labelSelector?: string; fieldSelector?: string; limit?: number; continue?: string;
  resourceVersion?: string; resourceVersionMatch?: string;
}

const GENERATE_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

export const PATCH_TYPES = {
  json: 'application/json-patch+json',
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function gr(t: ResourceType) { return { group: t.group, resource: t.resource }; }
function gk(t: ResourceType) { return { group: t.group, kind: t.kind }; }

/**
 * The object changed while this request awaited admission: like etcd's GuaranteedUpdate, the request is
 * re-run against the new state (a request that named a resourceVersion then fails with 409 Conflict).
 */
class StaleRead extends Error {}
const MAX_RETRIES = 100; // every round lets one writer through, so this bounds the wait, not progress

async function retrying<T>(t: ResourceType, name: string, fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof StaleRead)) throw e;
      if (i >= MAX_RETRIES) throw conflict(gr(t), name);
    }
  }
}

/** Drops fields that differ on every write so that no-op updates can be detected. */
function comparable(o: Obj): Obj {
  const c = clone(o);
  if (c.metadata) { delete c.metadata.resourceVersion; delete c.metadata.managedFields; }
  return c;
}

export class ApiCore {
  private types: ResourceType[] = builtinTypes();
  readonly store: Store;
  /** Warnings from CEL rules the evaluator could not run (they were skipped). */
  readonly celWarnings: CelWarning[] = [];
  private readonly warnedRules = new Set<string>();
  admission?: AdmissionHook;
  /** Called when a CRD's types go away (the HTTP layer ends their watches, as the real server does). */
  onStorageRemoved?: (storageKey: string) => void;

  constructor(opts: { maxHistory: number }) {
    this.store = new Store(opts.maxHistory);
    for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      const t = this.typeFor('', 'v1', 'namespaces')!;
      this.store.commit(t.storageKey, 'ADDED', newNamespaceObject({ metadata: { name: ns } }));
    }
  }

  // ----------------------------------------------------------------------------------------- types

  allTypes(): readonly ResourceType[] { return this.types; }

  typeFor(group: string, version: string, resource: string): ResourceType | undefined {
    return this.types.find((t) => t.group === group && t.version === version && t.resource === resource);
  }

  typeForKind(apiVersion: string, kind: string): ResourceType | undefined {
    const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') as [string, string] : ['', apiVersion];
    return this.types.find((t) => t.group === group && t.version === version && t.kind === kind);
  }

  /** Groups with their versions, in registration order (for /apis). */
  groups(): { name: string; versions: string[] }[] {
    const out: { name: string; versions: string[] }[] = [];
    for (const t of this.types) {
      if (!t.group) continue;
      let g = out.find((x) => x.name === t.group);
      if (!g) { g = { name: t.group, versions: [] }; out.push(g); }
      if (!g.versions.includes(t.version)) g.versions.push(t.version);
    }
    return out;
  }

  private installCrd(crd: Obj): void {
    const name = crd.metadata.name;
    const fresh = typesFromCrd(crd);
    this.types = this.types.filter((t) => t.crd?.name !== name).concat(fresh);
  }

  private uninstallCrd(crd: Obj): void {
    const name = crd.metadata.name;
    const gone = this.types.filter((t) => t.crd?.name === name);
    this.types = this.types.filter((t) => t.crd?.name !== name);
    const key = gone[0]?.storageKey;
    if (!key) return;
    for (const o of this.store.list(key)) {
      const dead = clone(o);
      this.store.commit(key, 'DELETED', dead, o);
    }
    this.onStorageRemoved?.(key);
  }

  // ----------------------------------------------------------------------------------------- output

  /** What a client sees: apiVersion/kind of the requested version (versions of one CRD share storage). */
  present(t: ResourceType, o: Obj): Obj {
    const c = t.convert ? t.convert.fromStorage(clone(o)) : clone(o);
    const { metadata, ...rest } = c;
    return { apiVersion: gvString(t), kind: t.kind, metadata, ...Object.fromEntries(Object.entries(rest).filter(([k]) => k !== 'apiVersion' && k !== 'kind')) };
  }

  /** Incoming object (in the requested version's shape) → stored shape. */
  private toStorage(t: ResourceType, o: Obj): Obj {
    return t.convert ? t.convert.toStorage(o) : o;
  }

  // ----------------------------------------------------------------------------------------- read

  get(t: ResourceType, namespace: string, name: string): Obj {
    const o = this.store.get(t.storageKey, t.namespaced ? namespace : '', name);
    if (!o) throw notFound(gr(t), name);
    return this.present(t, o);
  }

  list(t: ResourceType, namespace: string | undefined, opts: ListOptions): Obj {
    const labels = parseLabelSelector(opts.labelSelector);
    const fields = parseFieldSelector(opts.fieldSelector, this.selectableFields(t));
    let rv = this.store.currentRV;
    let start = '';
    if (opts.continue) {
      let tok: { rv: number; start: string };
      try {
        tok = JSON.parse(Buffer.from(opts.continue, 'base64').toString('utf8')) as { rv: number; start: string };
        if (typeof tok.rv !== 'number' || typeof tok.start !== 'string') throw new Error('bad');
      } catch {
        throw badRequest('continue key is not valid: illegal base64 data at input byte 0');
      }
      rv = tok.rv; start = tok.start;
    } else if (opts.resourceVersion && opts.resourceVersion !== '0') {
      const want = Number(opts.resourceVersion);
      if (!Number.isInteger(want)) throw badRequest(`invalid resource version: ${opts.resourceVersion}`);
      if (opts.resourceVersionMatch === 'Exact') rv = want;
      else if (want > this.store.currentRV) {
        throw new ApiStatusError(504, 'Timeout', `Timeout: Too large resource version: ${want}, current: ${this.store.currentRV}`,
          { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 });
      }
    }
    let items: Obj[];
    try {
      items = this.store.snapshot(t.storageKey, rv, t.namespaced ? namespace : undefined);
    } catch (e) {
      if (e instanceof ResourceVersionTooOld) {
        if (opts.continue) {
          throw new ApiStatusError(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.');
        }
        throw new ApiStatusError(410, 'Expired', 'The resourceVersion for the provided list is too old.');
      }
      throw e;
    }
    items = items.filter((o) => this.matches(t, o, labels, fields));
    if (start) items = items.filter((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}` > start);
    const metadata: Obj = { resourceVersion: String(rv) };
    if (opts.limit && opts.limit > 0 && items.length > opts.limit) {
      const remaining = items.length - opts.limit;
      items = items.slice(0, opts.limit);
      const last = items[items.length - 1]!;
      metadata.continue = Buffer.from(JSON.stringify({ rv, start: `${last.metadata.namespace ?? ''}/${last.metadata.name}` })).toString('base64');
      metadata.remainingItemCount = remaining;
    }
    return {
      kind: t.listKind, apiVersion: gvString(t), metadata,
      // built-in lists carry no apiVersion/kind on their items; custom resource lists do (as the real server)
      items: items.map((o) => {
        const p = this.present(t, o);
        if (t.builtin) { delete p.apiVersion; delete p.kind; }
        return p;
      }),
    };
  }

  selectableFields(t: ResourceType): string[] {
    return ['metadata.name', ...(t.namespaced ? ['metadata.namespace'] : []), ...Object.keys(t.fieldSelectors)];
  }

  matches(t: ResourceType, o: Obj, labels: ReturnType<typeof parseLabelSelector>, fields: ReturnType<typeof parseFieldSelector>): boolean {
    if (!matchLabels(labels, o.metadata?.labels)) return false;
    return matchFields(fields, (f) => {
      if (f === 'metadata.name') return o.metadata?.name ?? '';
      if (f === 'metadata.namespace') return o.metadata?.namespace ?? '';
      return t.fieldSelectors[f]!(o);
    });
  }

  // ----------------------------------------------------------------------------------------- validation

  /** Defaulting, pruning and validation for one write. Mutates `o`. */
  private prepare(t: ResourceType, o: Obj, old: Obj | undefined, opts: WriteOptions, warnings: string[]): void {
    const errs: FieldError[] = [];
    validateMeta(t, o, errs);
    if (t.crd) {
      const r = processCustomResource(o, t.crd.schema, old, t.crd.preserveUnknownFields);
      for (const w of r.celWarnings) {
        const key = `${w.path}\u0000${w.rule}`;
        if (this.warnedRules.has(key)) continue;
        this.warnedRules.add(key);
        this.celWarnings.push(w);
        process.emitWarning(`fake apiserver: skipped CEL rule ${JSON.stringify(w.rule)} at ${w.path || '<root>'}: ${w.reason} (a real API server enforces it)`);
      }
      if (r.pruned.length) {
        if (opts.fieldValidation === 'Strict') {
          throw badRequest(`${t.kind} in version "${t.version}" cannot be handled as a ${t.kind}: strict decoding error: ${r.pruned.map((p) => `unknown field "${p}"`).join(', ')}`);
        }
        if (opts.fieldValidation !== 'Ignore') for (const p of r.pruned) warnings.push(`unknown field "${p}"`);
      }
      errs.push(...r.errors);
    }
    if (t.group === '' && t.resource === 'pods' && opts.subresource !== 'status') validatePod(o, old, errs);
    if (t.resource === 'events' && (t.group === '' || t.group === 'events.k8s.io')) {
      const inv = o.involvedObject as Obj | undefined;
      const field = t.group === '' ? 'involvedObject.namespace' : 'regarding.namespace';
      if (inv?.namespace && inv.namespace !== o.metadata.namespace) errs.push(fieldErr.invalid(field, inv.namespace, 'does not match event.namespace'));
    }
    if (t.group === 'apiextensions.k8s.io' && t.resource === 'customresourcedefinitions') {
      try { typesFromCrd(o); } catch (e) {
        if (!(e instanceof CrdError)) throw e;
        errs.push(e.message.startsWith('Required') ? fieldErr.required(e.field, '') : fieldErr.invalid(e.field, e.value, e.message));
      }
    }
    if (old?.metadata?.deletionTimestamp) {
      const added = ((o.metadata.finalizers ?? []) as string[]).filter((f) => !((old.metadata.finalizers ?? []) as string[]).includes(f));
      if (added.length) {
        errs.push(fieldErr.forbidden('metadata.finalizers', `no new finalizers can be added if the object is being deleted, found new finalizers []string{${added.map((a) => JSON.stringify(a)).join(', ')}}`));
      }
    }
    if (errs.length) throw invalid(gk(t), o.metadata?.name ?? '', errs);
  }

  private checkNamespace(t: ResourceType, namespace: string): void {
    if (!t.namespaced) return;
    const nsType = this.typeFor('', 'v1', 'namespaces')!;
    const ns = this.store.get(nsType.storageKey, '', namespace);
    if (!ns) throw notFound({ group: '', resource: 'namespaces' }, namespace);
  }

  // ----------------------------------------------------------------------------------------- create

  async create(t: ResourceType, namespace: string, body: unknown, opts: WriteOptions = {}): Promise<WriteResult> {
    if (!isObject(body)) throw badRequest(`Object '${t.kind}' is missing in 'null'`);
    if (t.group === 'events.k8s.io') validateEventsV1(t, body as Obj);
    let o = this.toStorage(t, clone(body) as Obj);
    o.metadata = isObject(o.metadata) ? o.metadata : {};
    if (t.namespaced) {
      if (o.metadata.namespace && o.metadata.namespace !== namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      o.metadata.namespace = namespace;
    } else delete o.metadata.namespace;
    if (o.metadata.resourceVersion) {
      // upstream answers this with a bare 500 (storage error without a reason)
      throw new ApiStatusError(500, '', 'resourceVersion should not be set on objects to be created');
    }
    this.checkNamespace(t, namespace);
    o.apiVersion = gvString(t);
    o.kind = t.kind;
    for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields', 'generation']) delete o.metadata[k];
    if (t.group === '' && t.resource === 'pods') defaultPod(o);
    // Mutating admission sees the decoded, defaulted object before the registry fills in uid, creationTimestamp
    // and a generated name (so a pod created with generateName has no name yet), as upstream.
    if (this.admission) {
      const mutated = await this.admission({ phase: 'mutating', type: t, operation: 'CREATE', object: this.present(t, o), oldObject: undefined,
        namespace, name: o.metadata.name ?? '', dryRun: Boolean(opts.dryRun) });
      if (mutated) {
        o = this.toStorage(t, clone(mutated));
        o.metadata = isObject(o.metadata) ? o.metadata : {};
        if (t.namespaced) o.metadata.namespace = namespace;
        o.apiVersion = gvString(t); o.kind = t.kind;
        if (t.group === '' && t.resource === 'pods') defaultPod(o);
      }
    }
    // BeforeCreate: PrepareForCreate, generateName, system fields
    if (!o.metadata.name && o.metadata.generateName) {
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += GENERATE_CHARS[Math.floor(Math.random() * GENERATE_CHARS.length)];
      o.metadata.name = `${o.metadata.generateName}${suffix}`;
    }
    o.metadata.uid = randomUUID();
    o.metadata.creationTimestamp = now();
    if (t.generation) o.metadata.generation = 1;
    if (t.statusSubresource && t.crd) delete o.status;
    if (t.group === '' && t.resource === 'pods') o.status = { phase: 'Pending', qosClass: 'BestEffort' };
    if (t.group === '' && t.resource === 'namespaces') {
      o.metadata.labels = { ...(o.metadata.labels ?? {}), 'kubernetes.io/metadata.name': o.metadata.name };
      o.spec = { finalizers: ['kubernetes'], ...(o.spec ?? {}) };
      o.status = { phase: 'Active' };
    }
    const warnings: string[] = [];
    this.prepare(t, o, undefined, opts, warnings);
    if (this.store.get(t.storageKey, t.namespaced ? namespace : '', o.metadata.name)) throw alreadyExists(gr(t), o.metadata.name);
    if (t.group === 'apiextensions.k8s.io' && t.resource === 'customresourcedefinitions') this.crdStatus(o);
    if (this.admission) {
      await this.admission({ phase: 'validating', type: t, operation: 'CREATE', object: this.present(t, o), oldObject: undefined,
        namespace, name: o.metadata.name, dryRun: Boolean(opts.dryRun) });
    }
    if (this.store.get(t.storageKey, t.namespaced ? namespace : '', o.metadata.name)) throw alreadyExists(gr(t), o.metadata.name);
    if (opts.dryRun) return { obj: this.present(t, o), warnings, created: true };
    this.store.commit(t.storageKey, 'ADDED', o);
    if (t.group === 'apiextensions.k8s.io' && t.resource === 'customresourcedefinitions') this.installCrd(o);
    return { obj: this.present(t, o), warnings, created: true };
  }

  private crdStatus(crd: Obj): void {
    const ts = now();
    crd.status = {
      conditions: [
        { type: 'NamesAccepted', status: 'True', reason: 'NoConflicts', message: 'no conflicts found', lastTransitionTime: ts },
        { type: 'Established', status: 'True', reason: 'InitialNamesAccepted', message: 'the initial names have been accepted', lastTransitionTime: ts },
      ],
      acceptedNames: clone(crd.spec?.names ?? {}),
      storedVersions: ((crd.spec?.versions ?? []) as Obj[]).filter((v) => v.storage).map((v) => v.name),
    };
  }

  // ----------------------------------------------------------------------------------------- update

  async update(t: ResourceType, namespace: string, name: string, body: unknown, opts: WriteOptions = {}): Promise<WriteResult> {
    return retrying(t, name, () => this.updateOnce(t, namespace, name, body, opts));
  }

  private async updateOnce(t: ResourceType, namespace: string, name: string, body: unknown, opts: WriteOptions): Promise<WriteResult> {
    if (!isObject(body)) throw badRequest(`Object '${t.kind}' is missing in 'null'`);
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.storageKey, ns, name);
    if (!old) {
      if (t.createOnUpdate && !opts.subresource) {
        const b = clone(body) as Obj;
        if (b.metadata?.name !== undefined && b.metadata.name !== name) {
          throw badRequest(`the name of the object (${b.metadata.name}) does not match the name on the URL (${name})`);
        }
        b.metadata = { ...(b.metadata ?? {}), name };
        delete b.metadata.resourceVersion;
        return this.create(t, namespace, b, opts);
      }
      throw notFound(gr(t), name);
    }
    const o = this.toStorage(t, clone(body) as Obj);
    o.metadata = isObject(o.metadata) ? o.metadata : {};
    if (o.metadata.name !== undefined && o.metadata.name !== name) {
      throw badRequest(`the name of the object (${o.metadata.name}) does not match the name on the URL (${name})`);
    }
    if (t.namespaced && o.metadata.namespace !== undefined && o.metadata.namespace !== namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    const rv = o.metadata.resourceVersion;
    if (rv === undefined || rv === '') {
      if (!t.unconditionalUpdate) {
        throw invalid(gk(t), name, [fieldErr.invalid('metadata.resourceVersion', new RawValue('0x0'), 'must be specified for an update')]);
      }
    } else if (String(rv) !== old.metadata.resourceVersion) {
      throw conflict(gr(t), name);
    }
    return this.commitUpdate(t, ns, old, o, opts);
  }

  private async commitUpdate(t: ResourceType, ns: string, old: Obj, incoming: Obj, opts: WriteOptions): Promise<WriteResult> {
    const name = old.metadata.name as string;
    let o: Obj;
    if (opts.subresource === 'status') {
      if (!t.statusSubresource) throw notFound(gr(t), name);
      o = clone(old);
      if (incoming.status === undefined) delete o.status; else o.status = clone(incoming.status);
    } else {
      o = clone(incoming);
      o.apiVersion = gvString(t); o.kind = t.kind;
      if (t.statusSubresource) { if (old.status === undefined) delete o.status; else o.status = clone(old.status); }
      const keep = ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'namespace', 'name'];
      for (const k of keep) { if (old.metadata[k] === undefined) delete o.metadata[k]; else o.metadata[k] = old.metadata[k]; }
    }
    o.metadata.resourceVersion = old.metadata.resourceVersion;
    const warnings: string[] = [];
    const sub = opts.subresource;
    if (this.admission) {
      const mutated = await this.admission({ phase: 'mutating', type: t, operation: 'UPDATE', object: this.present(t, o), oldObject: this.present(t, old),
        namespace: ns, name, subresource: sub, dryRun: Boolean(opts.dryRun) });
      if (mutated) {
        const m = this.toStorage(t, clone(mutated));
        if (sub === 'status') o.status = m.status;
        else o = { ...m, metadata: { ...m.metadata, uid: old.metadata.uid, name, namespace: old.metadata.namespace } };
      }
    }
    this.prepare(t, o, old, opts, warnings);
    if (this.admission) {
      await this.admission({ phase: 'validating', type: t, operation: 'UPDATE', object: this.present(t, o), oldObject: this.present(t, old),
        namespace: ns, name, subresource: sub, dryRun: Boolean(opts.dryRun) });
    }
    if (this.store.get(t.storageKey, ns, name)?.metadata.resourceVersion !== old.metadata.resourceVersion) throw new StaleRead();
    if (t.group === 'apiextensions.k8s.io' && t.resource === 'customresourcedefinitions' && opts.subresource !== 'status') {
      this.crdStatus(o);
    }
    if (t.generation) {
      const spec = (x: Obj): Obj => {
        const c = clone(x);
        delete c.metadata; delete c.apiVersion; delete c.kind;
        if (t.statusSubresource) delete c.status;
        return c;
      };
      if (!isDeepStrictEqual(spec(o), spec(old))) o.metadata.generation = (old.metadata.generation ?? 1) + 1;
    }
    const finalizers = (o.metadata.finalizers ?? []) as string[];
    if (finalizers.length === 0) delete o.metadata.finalizers;
    const removeNow = Boolean(o.metadata.deletionTimestamp) && finalizers.length === 0;
    if (!removeNow && isDeepStrictEqual(comparable(o), comparable(old))) {
      return { obj: this.present(t, old), warnings }; // no-op: no new resourceVersion, no watch event
    }
    if (opts.dryRun) return { obj: this.present(t, o), warnings };
    if (removeNow) {
      this.store.commit(t.storageKey, 'DELETED', o, old);
      this.afterDelete(t, o);
    } else {
      this.store.commit(t.storageKey, 'MODIFIED', o, old);
      if (t.group === 'apiextensions.k8s.io' && t.resource === 'customresourcedefinitions') this.installCrd(o);
    }
    return { obj: this.present(t, o), warnings };
  }

  // ----------------------------------------------------------------------------------------- patch

  async patch(t: ResourceType, namespace: string, name: string, contentType: string, raw: string, opts: WriteOptions = {}): Promise<WriteResult> {
    return retrying(t, name, () => this.patchOnce(t, namespace, name, contentType, raw, opts));
  }

  private async patchOnce(t: ResourceType, namespace: string, name: string, contentType: string, raw: string, opts: WriteOptions): Promise<WriteResult> {
    const ct = contentType.split(';')[0]!.trim().toLowerCase();
    const accepted = t.builtin
      ? [PATCH_TYPES.json, PATCH_TYPES.merge, PATCH_TYPES.strategic, PATCH_TYPES.apply]
      : [PATCH_TYPES.json, PATCH_TYPES.merge, PATCH_TYPES.apply];
    if (!accepted.includes(ct as never)) throw unsupportedMediaType(ct, accepted);
    let body: unknown;
    try {
      body = ct === PATCH_TYPES.apply ? YAML.parse(raw) : JSON.parse(raw);
    } catch (e) {
      throw badRequest(`error decoding patch: ${(e as Error).message}`);
    }
    if (ct === PATCH_TYPES.apply) {
      if (!opts.fieldManager) {
        throw invalid({ group: 'meta.k8s.io', kind: 'PatchOptions' }, '', [fieldErr.required('fieldManager', 'is required for apply patch')]);
      }
    } else if (opts.force !== undefined) {
      throw invalid({ group: 'meta.k8s.io', kind: 'PatchOptions' }, '', [fieldErr.forbidden('force', 'may not be specified for non-apply patch')]);
    }
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.storageKey, ns, name);
    if (!old) {
      if (ct === PATCH_TYPES.apply && opts.subresource !== 'status') {
        if (!isObject(body)) throw badRequest('apply patch must be an object');
        const b = clone(body) as Obj;
        b.metadata = { ...(b.metadata ?? {}), name };
        return this.create(t, namespace, b, opts);
      }
      throw notFound(gr(t), name);
    }
    const current = this.present(t, old) as Json;
    let patched: Json;
    try {
      switch (ct) {
        case PATCH_TYPES.json: patched = jsonPatch(current, body); break;
        case PATCH_TYPES.merge: patched = mergePatch(current, body as Json); break;
        case PATCH_TYPES.strategic: patched = strategicMergePatch(current, body as Json); break;
        default: {
          // server-side apply, simplified: the applied configuration is merged into the live object
          if (!isObject(body)) throw new PatchError('apply patch must be an object', 'bad-request');
          const b = body as Obj;
          if (b.apiVersion && b.apiVersion !== gvString(t)) throw new PatchError(`apiVersion in apply patch (${b.apiVersion}) does not match ${gvString(t)}`, 'bad-request');
          patched = t.builtin ? strategicMergePatch(current, body as Json) : mergePatch(current, body as Json);
        }
      }
    } catch (e) {
      if (e instanceof PatchError) {
        if (e.kind === 'bad-request') throw badRequest(e.message);
        throw new ApiStatusError(422, 'Invalid', 'the server rejected our request due to an error in our request', { causes: [{ message: e.message }] });
      }
      throw e;
    }
    if (!isObject(patched)) throw badRequest('patch did not produce an object');
    const p = this.toStorage(t, patched as Obj);
    p.metadata = isObject(p.metadata) ? p.metadata : {};
    if (p.metadata.name !== name) throw badRequest(`the name of the object (${p.metadata.name}) does not match the name on the URL (${name})`);
    const rv = p.metadata.resourceVersion;
    if (rv !== undefined && rv !== '' && String(rv) !== old.metadata.resourceVersion) throw conflict(gr(t), name);
    return this.commitUpdate(t, ns, old, p, opts);
  }

  // ----------------------------------------------------------------------------------------- delete

  /**
   * Deletes, or marks for deletion when finalizers remain (HTTP 202 with the object, as upstream). A completed
   * delete answers with the object for pods, namespaces and services, and with a Success Status otherwise.
   */
  async deleteWithResponse(t: ResourceType, namespace: string, name: string, options: Obj = {}, opts: WriteOptions = {}): Promise<{ obj: Obj; code: number; body: Obj }> {
    const obj = await this.delete(t, namespace, name, options, opts);
    if (obj.metadata?.deletionTimestamp && this.store.get(t.storageKey, t.namespaced ? namespace : '', name)) {
      return { obj, code: opts.dryRun ? 200 : 202, body: obj };
    }
    if (t.group === '' && ['pods', 'namespaces', 'services'].includes(t.resource)) return { obj, code: 200, body: obj };
    const details: Obj = { name };
    if (t.group) details.group = t.group;
    details.kind = t.resource;
    details.uid = obj.metadata?.uid;
    return { obj, code: 200, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details } };
  }

  async delete(t: ResourceType, namespace: string, name: string, options: Obj = {}, opts: WriteOptions = {}): Promise<Obj> {
    return retrying(t, name, () => this.deleteOnce(t, namespace, name, options, opts));
  }

  private async deleteOnce(t: ResourceType, namespace: string, name: string, options: Obj, opts: WriteOptions): Promise<Obj> {
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.storageKey, ns, name);
    if (!old) throw notFound(gr(t), name);
    const pre = options.preconditions as { uid?: string; resourceVersion?: string } | undefined;
    if (pre?.uid && pre.uid !== old.metadata.uid) {
      throw conflict(gr(t), name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    if (pre?.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw conflict(gr(t), name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`);
    }
    if (this.admission) {
      for (const phase of ['mutating', 'validating'] as const) {
        await this.admission({ phase, type: t, operation: 'DELETE', object: undefined, oldObject: this.present(t, old), namespace: ns, name,
          dryRun: Boolean(opts.dryRun) });
      }
      if (this.store.get(t.storageKey, ns, name)?.metadata.resourceVersion !== old.metadata.resourceVersion) throw new StaleRead();
    }
    const finalizers = (old.metadata.finalizers ?? []) as string[];
    if (finalizers.length > 0) {
      if (old.metadata.deletionTimestamp) return this.present(t, old);
      const o = clone(old);
      o.metadata.deletionTimestamp = now();
      o.metadata.deletionGracePeriodSeconds = 0;
      if (t.generation) o.metadata.generation = (old.metadata.generation ?? 1) + 1;
      if (opts.dryRun) return this.present(t, o);
      this.store.commit(t.storageKey, 'MODIFIED', o, old);
      return this.present(t, o);
    }
    const o = clone(old);
    if (opts.dryRun) return this.present(t, o);
    this.store.commit(t.storageKey, 'DELETED', o, old);
    this.afterDelete(t, o);
    return this.present(t, o);
  }

  private afterDelete(t: ResourceType, o: Obj): void {
    if (t.group === 'apiextensions.k8s.io' && t.resource === 'customresourcedefinitions') this.uninstallCrd(o);
    if (t.group === '' && t.resource === 'namespaces') {
      // the namespace controller's job, done at once: objects without finalizers go, the rest are marked
      for (const rt of this.types) {
        if (!rt.namespaced || this.typeFor(rt.group, rt.version, rt.resource) !== rt) continue;
        if (this.types.find((x) => x.storageKey === rt.storageKey) !== rt) continue;
        for (const child of this.store.list(rt.storageKey, o.metadata.name)) {
          void this.delete(rt, o.metadata.name, child.metadata.name).catch((e: unknown) => {
            // already gone is fine (a finalizer flow or another request removed it); anything else is reported
            if (!(e instanceof ApiStatusError && e.code === 404)) {
              process.emitWarning(`fake apiserver: deleting ${rt.resource} ${o.metadata.name}/${child.metadata.name} with its namespace failed: ${(e as Error).message}`);
            }
          });
        }
      }
    }
  }

  async deleteCollection(t: ResourceType, namespace: string | undefined, list: ListOptions): Promise<Obj> {
    const l = this.list(t, namespace, { labelSelector: list.labelSelector, fieldSelector: list.fieldSelector });
    const items: Obj[] = [];
    for (const it of l.items as Obj[]) {
      try { items.push(await this.delete(t, it.metadata.namespace ?? '', it.metadata.name)); } catch (e) {
        if (!(e instanceof ApiStatusError && e.code === 404)) throw e;
      }
    }
    return { kind: t.listKind, apiVersion: gvString(t), metadata: { resourceVersion: String(this.store.currentRV) }, items };
  }
}
