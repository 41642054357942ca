/**
 * Rules of particular built-in types, kept apart from the generic registry: ObjectMeta validation, the pod
 * validation and defaulting clients depend on, Namespace completion, events.k8s.io/v1 validation.
 */
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { fieldErr, invalid, type FieldError } from './status.js';
import { clone, isObject } from './patch.js';
import type { ResourceType } from './resources.js';
import type { Obj } from './store.js';

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SUBDOMAIN_MSG = `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`;
const LABEL_MSG = `a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`;
const LABEL_VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_VALUE_MSG = `a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`;
const QUALIFIED_NAME_RE = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** ObjectMeta validation: name (DNS-1123 subdomain, or label for namespaces/serviceaccounts), labels, annotations, finalizers. */
export function validateMeta(t: ResourceType, o: Obj, errs: FieldError[]): void {
  const name = o.metadata?.name as string | undefined;
  const nameRe = t.resource === 'namespaces' || t.resource === 'serviceaccounts' ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
  const nameMsg = nameRe === DNS1123_LABEL ? LABEL_MSG : SUBDOMAIN_MSG;
  if (typeof name !== 'string' || name === '') errs.push(fieldErr.required('metadata.name', 'name or generateName is required'));
  else if (name.length > (nameRe === DNS1123_LABEL ? 63 : 253) || !nameRe.test(name)) errs.push(fieldErr.invalid('metadata.name', name, nameMsg));
  for (const [k, v] of Object.entries((o.metadata?.labels ?? {}) as Record<string, unknown>)) {
    if (!QUALIFIED_NAME_RE.test(k)) errs.push(fieldErr.invalid('metadata.labels', k, `name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`));
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE_RE.test(v)) errs.push(fieldErr.invalid('metadata.labels', v, LABEL_VALUE_MSG));
  }
  for (const [k, v] of Object.entries((o.metadata?.annotations ?? {}) as Record<string, unknown>)) {
    if (!QUALIFIED_NAME_RE.test(k)) errs.push(fieldErr.invalid('metadata.annotations', k, `name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`));
    if (typeof v !== 'string') errs.push(fieldErr.invalid(`metadata.annotations`, v, 'annotation values must be strings'));
  }
  const fins = o.metadata?.finalizers;
  if (fins !== undefined && (!Array.isArray(fins) || fins.some((f) => typeof f !== 'string' || !QUALIFIED_NAME_RE.test(f)))) {
    errs.push(fieldErr.invalid('metadata.finalizers', fins, 'finalizers must be qualified names'));
  }
}

/** The parts of pod validation clients trip over: containers with name and image; spec immutability on update. */
export function validatePod(o: Obj, old: Obj | undefined, errs: FieldError[]): void {
  const spec = o.spec as Obj | undefined;
  if (!spec || typeof spec !== 'object') { errs.push(fieldErr.required('spec.containers', '')); return; }
  const cs = spec.containers;
  if (!Array.isArray(cs) || cs.length === 0) errs.push(fieldErr.required('spec.containers', ''));
  else cs.forEach((c: Obj, i: number) => {
    if (!c?.name) errs.push(fieldErr.required(`spec.containers[${i}].name`, ''));
    else if (!DNS1123_LABEL.test(c.name)) errs.push(fieldErr.invalid(`spec.containers[${i}].name`, c.name, LABEL_MSG));
    if (!c?.image) errs.push(fieldErr.required(`spec.containers[${i}].image`, ''));
  });
  if (old) {
    // pod updates may only change images, activeDeadlineSeconds and add tolerations
    const strip = (s: Obj): Obj => {
      const c = clone(s);
      for (const f of ['containers', 'initContainers', 'ephemeralContainers']) {
        if (Array.isArray(c[f])) c[f] = c[f].map((x: Obj) => ({ ...x, image: undefined }));
      }
      delete c.activeDeadlineSeconds; delete c.tolerations; delete c.terminationGracePeriodSeconds;
      return JSON.parse(JSON.stringify(c));
    };
    if (!isDeepStrictEqual(strip(o.spec), strip(old.spec))) {
      errs.push(fieldErr.forbidden('spec', 'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)'));
    }
  }
}

/** Pod defaults the real API server fills in (subset). */
export function defaultPod(o: Obj): void {
  const s = (o.spec ??= {});
  s.restartPolicy ??= 'Always';
  s.dnsPolicy ??= 'ClusterFirst';
  s.schedulerName ??= 'default-scheduler';
  s.terminationGracePeriodSeconds ??= 30;
  s.serviceAccountName ??= s.serviceAccount ?? 'default';
  s.serviceAccount ??= s.serviceAccountName;
  s.securityContext ??= {};
  s.enableServiceLinks ??= true;
  s.priority ??= 0;
  s.preemptionPolicy ??= 'PreemptLowerPriority';
  for (const f of ['containers', 'initContainers']) {
    for (const c of (Array.isArray(s[f]) ? s[f] : []) as Obj[]) {
      if (!isObject(c)) continue;
      const img = String(c.image ?? '');
      c.imagePullPolicy ??= /:latest$/.test(img) || !/:[^/]+$/.test(img) ? 'Always' : 'IfNotPresent';
      c.terminationMessagePath ??= '/dev/termination-log';
      c.terminationMessagePolicy ??= 'File';
      c.resources ??= {};
    }
  }
}

/** A Namespace as the registry completes it (used for the namespaces present at start). */
export function newNamespaceObject(body: Obj): Obj {
  const o = clone(body);
  o.apiVersion = 'v1'; o.kind = 'Namespace';
  o.metadata = { ...o.metadata, uid: randomUUID(), creationTimestamp: now() };
  o.metadata.labels = { ...(o.metadata.labels ?? {}), 'kubernetes.io/metadata.name': o.metadata.name };
  o.spec = { finalizers: ['kubernetes'], ...(o.spec ?? {}) };
  o.status = { phase: 'Active' };
  return o;
}

/** events.k8s.io/v1 requires the fields of the new event API (k8s.io/kubernetes/pkg/apis/core/validation/events.go). */
export function validateEventsV1(t: ResourceType, o: Obj): void {
  const errs: FieldError[] = [];
  if (!o.eventTime) errs.push(fieldErr.required('eventTime', ''));
  for (const f of ['reportingController', 'reportingInstance', 'action', 'reason'] as const) {
    if (!o[f]) errs.push(fieldErr.required(f, ''));
  }
  if (typeof o.note === 'string' && Buffer.byteLength(o.note) > 1024) errs.push(fieldErr.tooLong('note', 1024));
  if (o.type !== 'Normal' && o.type !== 'Warning') errs.push(fieldErr.notSupported('type', o.type ?? '', ['Normal', 'Warning']));
  if (errs.length) throw invalid({ group: t.group, kind: t.kind }, o.metadata?.name ?? o.metadata?.generateName ?? '', errs);
}

