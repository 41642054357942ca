/**
 * The LockCheckpoint CRD's OpenAPI schema applied the way the API server applies a structural
 * schema — defaults filled in, unknown fields pruned (except under additionalProperties maps and
 * x-kubernetes-preserve-unknown-fields), then validated — with ajv, an independent JSON Schema
 * implementation. The fuzz oracle uses it offline, thousands of times; the real API server checks
 * the same CRD in test/api/crd.test.ts (including its CEL rules, which ajv does not run).
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';

export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  [k: string]: unknown;
}
export interface SchemaError { field: string; detail: string }

/** A copy of `s` in which every object with declared properties refuses (so: prunes) the others. */
function pruning(s: Schema): Schema {
  const out: Schema = { ...s };
  for (const k of Object.keys(out)) if (k.startsWith('x-kubernetes-')) delete out[k];
  if (s.properties) {
    out.properties = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, pruning(v)]));
    if (s.additionalProperties === undefined && !s['x-kubernetes-preserve-unknown-fields']) out.additionalProperties = false;
  }
  if (s.items) out.items = pruning(s.items);
  if (typeof s.additionalProperties === 'object') out.additionalProperties = pruning(s.additionalProperties);
  return out;
}

function makeAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: false, useDefaults: true, removeAdditional: true });
  for (const f of ['int32', 'int64', 'byte']) ajv.addFormat(f, true);
  ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
  return ajv;
}

const cache = new WeakMap<Schema, ValidateFunction>();
let shared: Ajv | undefined;
function compiled(schema: Schema): ValidateFunction {
  let v = cache.get(schema);
  if (!v) {
    shared ??= makeAjv();
    v = shared.compile(pruning(schema));
    cache.set(schema, v);
  }
  return v;
}

function toErrors(errs: readonly ErrorObject[] | null | undefined, base: string): SchemaError[] {
  return (errs ?? []).map((e) => ({ field: `${base}${e.instancePath.replace(/\//g, '.')}`, detail: e.message ?? e.keyword }));
}

/** Defaults, pruning and validation of a whole object, in place (as a create would store it). */
export function processCustomResource(obj: Record<string, unknown>, schema: Schema): { errors: SchemaError[] } {
  const v = compiled(schema);
  v(obj);
  return { errors: toErrors(v.errors, '').map((e) => ({ ...e, field: e.field.replace(/^\./, '') })) };
}

/** Validation of one value against a sub-schema (a status field a patch writes). */
export function validateTree(value: unknown, schema: Schema, path: string, errs: SchemaError[]): void {
  const v = compiled(schema);
  v(structuredClone(value));
  errs.push(...toErrors(v.errors, path));
}
