/**
 * The resource registry: built-in types and the types installed by CustomResourceDefinitions.
 * Each entry says how the type is served (path, scope, kind, subresources) and which fields it can be
 * selected on; discovery documents are generated from it.
 */
import type { Schema } from './schema.js';
import type { PrinterColumn } from './table.js';

export interface ResourceType {
  readonly group: string;
  readonly version: string;
  /** plural, lower case: `pods` */
  readonly resource: string;
  readonly singular: string;
  readonly kind: string;
  readonly listKind: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
  readonly categories: readonly string[];
  readonly statusSubresource: boolean;
  /** metadata.generation is maintained (custom resources, pods and workloads). */
  readonly generation: boolean;
  /** Built-in types accept strategic merge patch; custom resources answer 415. */
  readonly builtin: boolean;
  /** Storage key shared by every version of the same group/resource. */
  readonly storageKey: string;
  /** Extra fields (besides metadata.name/namespace) usable in fieldSelector; each maps to a getter. */
  readonly fieldSelectors: Readonly<Record<string, (o: Record<string, unknown>) => string>>;
  /** CRD data for custom resources. */
  readonly crd?: {
    readonly name: string;
    readonly schema?: Schema;
    readonly preserveUnknownFields: boolean;
    readonly printerColumns?: readonly PrinterColumn[];
  };
  /** AllowUnconditionalUpdate: custom resources refuse a PUT without metadata.resourceVersion. */
  readonly unconditionalUpdate: boolean;
  /** AllowCreateOnUpdate: a PUT of a missing object creates it (leases, events, services). */
  readonly createOnUpdate: boolean;
  /** Conversion for a version stored in another version's shape (events.k8s.io/v1 events live as core/v1 events). */
  readonly convert?: {
    readonly toStorage: (o: Record<string, any>) => Record<string, any>;
    readonly fromStorage: (o: Record<string, any>) => Record<string, any>;
  };
}

/** events.k8s.io/v1 field → core/v1 field (the two APIs share one storage, as in kube-apiserver). */
const EVENT_FIELDS: readonly (readonly [string, string])[] = [
  ['regarding', 'involvedObject'], ['note', 'message'], ['deprecatedSource', 'source'],
  ['deprecatedFirstTimestamp', 'firstTimestamp'], ['deprecatedLastTimestamp', 'lastTimestamp'],
  ['deprecatedCount', 'count'], ['reportingController', 'reportingComponent'],
];

function renameFields(o: Record<string, any>, pairs: readonly (readonly [string, string])[], apiVersion: string): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [k, v] of Object.entries(o)) {
    const p = pairs.find(([from]) => from === k);
    out[p ? p[1] : k] = v;
  }
  out.apiVersion = apiVersion;
  return out;
}

const EVENTS_V1_CONVERT = {
  toStorage: (o: Record<string, any>) => renameFields(o, EVENT_FIELDS, 'v1'),
  fromStorage: (o: Record<string, any>) => renameFields(o, EVENT_FIELDS.map(([a, b]) => [b, a] as const), 'events.k8s.io/v1'),
};

export function gvString(t: { group: string; version: string }): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

/** Reads a dotted path (`spec.nodeName`) as the string the field selector compares. */
export function pathGetter(path: string): (o: Record<string, unknown>) => string {
  const parts = path.split('.');
  return (o) => {
    let cur: unknown = o;
    for (const p of parts) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
    if (cur === undefined || cur === null) return '';
    return typeof cur === 'object' ? JSON.stringify(cur) : String(cur);
  };
}

/** `name` or `name:storedPath` (a selector name read from another path of the stored object). */
function fs(paths: readonly string[]): Record<string, (o: Record<string, unknown>) => string> {
  const out: Record<string, (o: Record<string, unknown>) => string> = {};
  for (const p of paths) {
    const [name, stored] = p.split(':') as [string, string | undefined];
    out[name] = pathGetter(stored ?? name);
  }
  return out;
}

interface BuiltinDef {
  group: string; version: string; resource: string; kind: string; namespaced: boolean;
  status?: boolean; generation?: boolean; shortNames?: string[]; fields?: string[]; storage?: string; categories?: string[];
  convert?: ResourceType['convert'];
  /** The registry strategy's AllowUnconditionalUpdate is false. */
  conditional?: boolean;
  createOnUpdate?: boolean;
}

const BUILTINS: readonly BuiltinDef[] = [
  { group: '', version: 'v1', resource: 'pods', kind: 'Pod', namespaced: true, status: true, generation: true, shortNames: ['po'],
    categories: ['all'],
    fields: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork',
      'status.phase', 'status.podIP', 'status.nominatedNodeName'] },
  { group: '', version: 'v1', resource: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'], createOnUpdate: true,
    fields: ['involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name', 'involvedObject.uid',
      'involvedObject.apiVersion', 'involvedObject.resourceVersion', 'involvedObject.fieldPath', 'reason',
      'reportingComponent', 'source', 'type'] },
  { group: '', version: 'v1', resource: 'namespaces', kind: 'Namespace', namespaced: false, status: true, shortNames: ['ns'],
    fields: ['status.phase'] },
  { group: '', version: 'v1', resource: 'configmaps', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'] },
  { group: '', version: 'v1', resource: 'secrets', kind: 'Secret', namespaced: true, fields: ['type'] },
  { group: '', version: 'v1', resource: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true, shortNames: ['sa'] },
  { group: '', version: 'v1', resource: 'services', kind: 'Service', namespaced: true, status: true, shortNames: ['svc'], categories: ['all'],
    createOnUpdate: true },
  { group: '', version: 'v1', resource: 'nodes', kind: 'Node', namespaced: false, status: true, shortNames: ['no'],
    fields: ['spec.unschedulable'] },
  { group: '', version: 'v1', resource: 'persistentvolumeclaims', kind: 'PersistentVolumeClaim', namespaced: true, status: true,
    shortNames: ['pvc'] },
  { group: 'apps', version: 'v1', resource: 'deployments', kind: 'Deployment', namespaced: true, status: true, generation: true,
    shortNames: ['deploy'], categories: ['all'] },
  { group: 'apps', version: 'v1', resource: 'daemonsets', kind: 'DaemonSet', namespaced: true, status: true, generation: true,
    shortNames: ['ds'], categories: ['all'] },
  { group: 'coordination.k8s.io', version: 'v1', resource: 'leases', kind: 'Lease', namespaced: true, conditional: true, createOnUpdate: true },
  { group: 'events.k8s.io', version: 'v1', resource: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'],
    storage: '/events', convert: EVENTS_V1_CONVERT, createOnUpdate: true,
    fields: ['regarding.kind:involvedObject.kind', 'regarding.namespace:involvedObject.namespace', 'regarding.name:involvedObject.name',
      'regarding.uid:involvedObject.uid', 'regarding.apiVersion:involvedObject.apiVersion', 'reason', 'type',
      'reportingController:reportingComponent'] },
  { group: 'apiextensions.k8s.io', version: 'v1', resource: 'customresourcedefinitions', kind: 'CustomResourceDefinition',
    namespaced: false, status: true, generation: true, shortNames: ['crd', 'crds'], conditional: true },
  { group: 'admissionregistration.k8s.io', version: 'v1', resource: 'mutatingwebhookconfigurations',
    kind: 'MutatingWebhookConfiguration', namespaced: false, generation: true, conditional: true },
  { group: 'admissionregistration.k8s.io', version: 'v1', resource: 'validatingwebhookconfigurations',
    kind: 'ValidatingWebhookConfiguration', namespaced: false, generation: true, conditional: true },
];

export function builtinTypes(): ResourceType[] {
  return BUILTINS.map((b) => ({
    group: b.group, version: b.version, resource: b.resource, singular: b.kind.toLowerCase(), kind: b.kind,
    listKind: `${b.kind}List`, namespaced: b.namespaced, shortNames: b.shortNames ?? [], categories: b.categories ?? [],
    statusSubresource: b.status ?? false, generation: b.generation ?? false, builtin: true,
    storageKey: b.storage ?? `${b.group}/${b.resource}`, fieldSelectors: fs(b.fields ?? []), unconditionalUpdate: !b.conditional,
    createOnUpdate: b.createOnUpdate ?? false, convert: b.convert,
  }));
}

export class CrdError extends Error {
  constructor(readonly field: string, readonly value: unknown, message: string) {
    super(message);
    this.name = 'CrdError';
  }
}

/** Builds the served types of one CRD object (apiextensions.k8s.io/v1 shape). */
export function typesFromCrd(crd: Record<string, unknown>): ResourceType[] {
  const spec = (crd.spec ?? {}) as Record<string, any>;
  const names = (spec.names ?? {}) as Record<string, any>;
  const group = String(spec.group ?? '');
  const plural = String(names.plural ?? '');
  const name = String((crd.metadata as Record<string, unknown> | undefined)?.name ?? '');
  if (!group) throw new CrdError('spec.group', '', 'Required value');
  if (!plural) throw new CrdError('spec.names.plural', '', 'Required value');
  if (!names.kind) throw new CrdError('spec.names.kind', '', 'Required value');
  if (name !== `${plural}.${group}`) throw new CrdError('metadata.name', name, `must be spec.names.plural+"."+spec.group`);
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster') {
    throw new CrdError('spec.scope', spec.scope ?? '', 'Unsupported value');
  }
  const versions = (spec.versions ?? []) as Record<string, any>[];
  if (versions.length === 0) throw new CrdError('spec.versions', null, 'Required value: must have exactly one version marked as storage version');
  if (versions.filter((v) => v.storage).length !== 1) {
    throw new CrdError('spec.versions', null, 'must have exactly one version marked as storage version');
  }
  const out: ResourceType[] = [];
  for (const v of versions) {
    if (v.served === false) continue;
    const selectable = ((v.selectableFields ?? []) as { jsonPath: string }[]).map((f) => f.jsonPath.replace(/^\./, ''));
    out.push({
      group, version: String(v.name), resource: plural, singular: String(names.singular ?? String(names.kind).toLowerCase()),
      kind: String(names.kind), listKind: String(names.listKind ?? `${names.kind}List`),
      namespaced: spec.scope === 'Namespaced', shortNames: names.shortNames ?? [], categories: names.categories ?? [],
      statusSubresource: Boolean(v.subresources?.status), generation: true, builtin: false,
      storageKey: `${group}/${plural}`, fieldSelectors: fs(selectable), unconditionalUpdate: false, createOnUpdate: false,
      crd: { name, schema: v.schema?.openAPIV3Schema as Schema | undefined, preserveUnknownFields: spec.preserveUnknownFields === true,
        printerColumns: v.additionalPrinterColumns as PrinterColumn[] | undefined },
    });
  }
  return out;
}

/** The APIResourceList for one group/version. */
export function apiResourceList(types: readonly ResourceType[], gv: string): Record<string, unknown> {
  const resources: Record<string, unknown>[] = [];
  for (const t of types) {
    const r: Record<string, unknown> = {
      name: t.resource, singularName: t.singular, namespaced: t.namespaced, kind: t.kind,
      verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
    };
    if (t.shortNames.length) r.shortNames = [...t.shortNames];
    if (t.categories.length) r.categories = [...t.categories];
    resources.push(r);
    if (t.statusSubresource) {
      resources.push({ name: `${t.resource}/status`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: gv, resources };
}
