/**
 * Structural-schema handling for custom resources, following apiextensions-apiserver's order:
 *   1. drop `null`s of non-nullable fields that have no default,
 *   2. apply `default`s (a missing field, or a null non-nullable one, gets the default; defaults are themselves
 *      defaulted, and nothing is defaulted under a missing parent),
 *   3. prune unknown fields (kept under `x-kubernetes-preserve-unknown-fields`; `apiVersion`, `kind`,
 *      `metadata` are always kept at the root),
 *   4. validate (type, int-or-string, enum, pattern, bounds, lengths, items, required, oneOf/anyOf/allOf/not,
 *      list-type set/map uniqueness) producing field errors worded like the real server's,
 *   5. `x-kubernetes-validations` CEL rules through the small evaluator in cel.ts (see there for what it supports;
 *      a rule it cannot compile is skipped with a warning, whereas a real server would enforce it).
 */
import { isDeepStrictEqual } from 'node:util';
import { compileCel, CelError, type CelProgram } from './cel.js';
import { fieldErr, type FieldError } from './status.js';
import { clone, isObject } from './patch.js';

export interface CelRule {
  rule: string; message?: string; messageExpression?: string; reason?: string; fieldPath?: string; optionalOldSelf?: boolean;
}

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  format?: string;
  minimum?: number; maximum?: number; exclusiveMinimum?: boolean; exclusiveMaximum?: boolean; multipleOf?: number;
  minLength?: number; maxLength?: number;
  minItems?: number; maxItems?: number; uniqueItems?: boolean;
  minProperties?: number; maxProperties?: number;
  nullable?: boolean;
  default?: unknown;
  oneOf?: Schema[]; anyOf?: Schema[]; allOf?: Schema[]; not?: Schema;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-embedded-resource'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-map-type'?: 'atomic' | 'granular';
  'x-kubernetes-validations'?: CelRule[];
}

type Obj = Record<string, unknown>;

function childPath(base: string, key: string): string {
  return base ? `${base}.${key}` : key;
}

function propSchema(s: Schema | undefined, key: string): Schema | undefined {
  if (!s) return undefined;
  if (s.properties && Object.prototype.hasOwnProperty.call(s.properties, key)) return s.properties[key];
  if (isObject(s.additionalProperties)) return s.additionalProperties as Schema;
  return undefined;
}

function preserves(s: Schema | undefined): boolean {
  return Boolean(s?.['x-kubernetes-preserve-unknown-fields']) || s?.additionalProperties === true;
}

// ---------------------------------------------------------------------------------------------
// 1+2: nulls and defaults

/** Mutates `v` in place: drops non-nullable nulls, applies defaults. */
export function applyDefaults(v: unknown, s: Schema | undefined): void {
  if (!s) return;
  if (isObject(v)) {
    const o = v as Obj;
    const props = s.properties ?? {};
    for (const [k, ps] of Object.entries(props)) {
      if (o[k] === null && !ps.nullable) {
        if (ps.default !== undefined) o[k] = clone(ps.default);
        else delete o[k];
      } else if (o[k] === undefined && ps.default !== undefined) {
        o[k] = clone(ps.default);
      }
    }
    for (const [k, child] of Object.entries(o)) {
      const cs = propSchema(s, k);
      if (!cs) continue;
      if (child === null && !cs.nullable && !(s.properties && k in s.properties)) { delete o[k]; continue; }
      applyDefaults(child, cs);
    }
  } else if (Array.isArray(v) && s.items) {
    for (let i = 0; i < v.length; i++) {
      if (v[i] === null && !s.items.nullable && s.items.default !== undefined) v[i] = clone(s.items.default);
      applyDefaults(v[i], s.items);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 3: pruning

/** Mutates `v` in place, removing fields the schema does not declare; returns the pruned paths. */
export function prune(v: unknown, s: Schema | undefined, path: string, isRoot: boolean, out: string[] = []): string[] {
  if (!s) return out;
  if (isObject(v)) {
    if (s['x-kubernetes-embedded-resource'] || isRoot) {
      // apiVersion/kind/metadata of (embedded) objects are never pruned
    }
    for (const k of Object.keys(v)) {
      if ((isRoot || s['x-kubernetes-embedded-resource']) && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
      const cs = propSchema(s, k);
      if (cs) prune(v[k], cs, childPath(path, k), false, out);
      else if (!preserves(s)) { delete v[k]; out.push(childPath(path, k)); }
    }
  } else if (Array.isArray(v) && s.items) {
    v.forEach((x, i) => prune(x, s.items, `${path}[${i}]`, false, out));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 4: validation

function jsType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeOk(v: unknown, s: Schema): boolean {
  if (s['x-kubernetes-int-or-string']) return typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v));
  switch (s.type) {
    case undefined: return true;
    case 'object': return isObject(v);
    case 'array': return Array.isArray(v);
    case 'string': return typeof v === 'string';
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'number': return typeof v === 'number';
    case 'boolean': return typeof v === 'boolean';
    default: return true;
  }
}

const patternCache = new Map<string, RegExp | null>();
/** Compiles an ECMA-262/RE2 pattern; one JS cannot compile is skipped with a process warning (a real server applies it). */
function regex(p: string): RegExp | null {
  if (!patternCache.has(p)) {
    try { patternCache.set(p, new RegExp(p, 'u')); } catch (e) {
      patternCache.set(p, null);
      process.emitWarning(`fake apiserver: cannot compile schema pattern ${JSON.stringify(p)} (${(e as Error).message}); not enforced here, a real API server enforces it`);
    }
  }
  return patternCache.get(p)!;
}

const DATE_TIME_RE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** Value validations of one node (no recursion into children except through the combinators). */
export function validateValue(v: unknown, s: Schema, path: string, errs: FieldError[]): void {
  const name = path || '<nil>';
  if (v === null) {
    if (!s.nullable && (s.type !== undefined || s['x-kubernetes-int-or-string'])) {
      errs.push(fieldErr.typeInvalid(path, v, `${name} in body must be of type ${s.type ?? 'string'}: "null"`));
    }
    return;
  }
  if (!typeOk(v, s)) {
    const want = s['x-kubernetes-int-or-string'] ? 'integer,string' : s.type!;
    errs.push(fieldErr.typeInvalid(path, v, `${name} in body must be of type ${want}: "${jsType(v)}"`));
    return;
  }
  if (s.enum && !s.enum.some((e) => isDeepStrictEqual(e, v))) {
    errs.push(fieldErr.notSupported(path, v, s.enum));
  }
  if (typeof v === 'string') {
    if (s.maxLength !== undefined && [...v].length > s.maxLength) errs.push(fieldErr.tooLong(path, s.maxLength));
    if (s.minLength !== undefined && [...v].length < s.minLength) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should be at least ${s.minLength} chars long`));
    }
    if (s.pattern !== undefined) {
      const re = regex(s.pattern);
      if (re && !re.test(v)) errs.push(fieldErr.invalid(path, v, `${name} in body should match '${s.pattern}'`));
    }
    if (s.format === 'date-time' && !DATE_TIME_RE.test(v)) {
      errs.push(fieldErr.invalid(path, v, `${name} in body must be of type date-time: "${v}"`));
    }
  }
  if (typeof v === 'number') {
    if (s.minimum !== undefined && (s.exclusiveMinimum ? v <= s.minimum : v < s.minimum)) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should be greater than ${s.exclusiveMinimum ? '' : 'or equal to '}${s.minimum}`));
    }
    if (s.maximum !== undefined && (s.exclusiveMaximum ? v >= s.maximum : v > s.maximum)) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should be less than ${s.exclusiveMaximum ? '' : 'or equal to '}${s.maximum}`));
    }
    if (s.multipleOf !== undefined && s.multipleOf > 0 && Math.abs(v / s.multipleOf - Math.round(v / s.multipleOf)) > 1e-9) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should be a multiple of ${s.multipleOf}`));
    }
  }
  if (Array.isArray(v)) {
    if (s.maxItems !== undefined && v.length > s.maxItems) errs.push(fieldErr.tooMany(path, v.length, s.maxItems));
    if (s.minItems !== undefined && v.length < s.minItems) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should have at least ${s.minItems} items`));
    }
    const lt = s['x-kubernetes-list-type'];
    if (s.uniqueItems || lt === 'set') {
      v.forEach((x, i) => { if (v.findIndex((y) => isDeepStrictEqual(x, y)) < i) errs.push(fieldErr.duplicate(`${path}[${i}]`, x)); });
    }
    if (lt === 'map') {
      const keys = s['x-kubernetes-list-map-keys'] ?? [];
      const seen: unknown[] = [];
      v.forEach((x, i) => {
        if (!isObject(x)) return;
        const k = keys.map((kk) => x[kk]);
        if (seen.some((p) => isDeepStrictEqual(p, k))) {
          const shown = keys.length === 1 ? x[keys[0]!] : Object.fromEntries(keys.map((kk) => [kk, x[kk]]));
          errs.push(fieldErr.duplicate(`${path}[${i}]`, shown));
        }
        seen.push(k);
      });
    }
  }
  if (isObject(v)) {
    for (const r of s.required ?? []) if (v[r] === undefined) errs.push(fieldErr.required(childPath(path, r)));
    const n = Object.keys(v).length;
    if (s.maxProperties !== undefined && n > s.maxProperties) errs.push(fieldErr.tooMany(path, n, s.maxProperties));
    if (s.minProperties !== undefined && n < s.minProperties) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should have at least ${s.minProperties} properties`));
    }
  }
  const subOk = (sub: Schema): boolean => {
    const e: FieldError[] = [];
    validateTree(v, sub, path, e, false);
    return e.length === 0;
  };
  if (s.allOf) {
    for (const sub of s.allOf) validateTree(v, sub, path, errs, false);
  }
  if (s.anyOf && !s.anyOf.some(subOk)) {
    errs.push(fieldErr.invalid(path, v, `${name} in body must validate at least one schema (anyOf)`));
  }
  if (s.oneOf) {
    const n = s.oneOf.filter(subOk).length;
    if (n !== 1) errs.push(fieldErr.invalid(path, v, `${name} in body must validate one and only one schema (oneOf)`));
  }
  if (s.not && subOk(s.not)) errs.push(fieldErr.invalid(path, v, `${name} in body must not validate the schema (not)`));
}

/** Recursively validates `v` against `s`. At the root, apiVersion/kind/metadata are skipped. */
export function validateTree(v: unknown, s: Schema, path: string, errs: FieldError[], isRoot: boolean): void {
  if (v === undefined) return;
  const before = errs.length;
  validateValue(v, s, path, errs);
  if (errs.length > before && !typeOk(v, s)) return;
  if (isObject(v)) {
    for (const [k, child] of Object.entries(v)) {
      if (isRoot && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
      const cs = propSchema(s, k);
      if (cs) validateTree(child, cs, childPath(path, k), errs, false);
    }
  } else if (Array.isArray(v) && s.items) {
    v.forEach((x, i) => validateTree(x, s.items!, `${path}[${i}]`, errs, false));
  }
}

// ---------------------------------------------------------------------------------------------
// 5: CEL

export interface CelWarning { readonly path: string; readonly rule: string; readonly reason: string }

const programCache = new Map<string, CelProgram | CelError>();
function program(rule: string): CelProgram | CelError {
  let p = programCache.get(rule);
  if (!p) {
    try { p = compileCel(rule); } catch (e) { p = e instanceof CelError ? e : new CelError(String(e)); }
    programCache.set(rule, p);
  }
  return p;
}

function correlatedOld(old: unknown, s: Schema, key: string | number, newItem: unknown): unknown {
  if (typeof key === 'string') return isObject(old) ? old[key] : undefined;
  // list items correlate only in list-type=map lists, by their keys (as upstream)
  if (!Array.isArray(old) || s['x-kubernetes-list-type'] !== 'map' || !isObject(newItem)) return undefined;
  const keys = s['x-kubernetes-list-map-keys'] ?? [];
  return old.find((o) => isObject(o) && keys.every((k) => isDeepStrictEqual(o[k], newItem[k])));
}

/** Evaluates x-kubernetes-validations on the whole tree. `old` is the previous object on update, else undefined. */
export function validateCel(
  v: unknown, old: unknown, s: Schema, path: string, errs: FieldError[], warnings: CelWarning[], isRoot: boolean,
): void {
  if (v === undefined || v === null) return;
  for (const r of s['x-kubernetes-validations'] ?? []) {
    const p = program(r.rule);
    if (p instanceof CelError) {
      warnings.push({ path, rule: r.rule, reason: p.message });
      continue;
    }
    if (p.usesOldSelf && old === undefined && !r.optionalOldSelf) continue; // transition rule: update only
    let ok: unknown;
    try {
      ok = p.evaluate({ self: v, oldSelf: old });
    } catch (e) {
      if (e instanceof CelError && e.unsupported) { warnings.push({ path, rule: r.rule, reason: e.message }); continue; }
      errs.push(fieldErr.invalid(path, v, `${r.message ?? `failed rule: ${r.rule}`}: ${(e as Error).message}`));
      continue;
    }
    if (ok !== true) {
      const field = r.fieldPath ? childPath(path, r.fieldPath.replace(/^\./, '')) : path;
      const msg = r.message ?? `failed rule: ${r.rule}`;
      switch (r.reason) {
        case 'FieldValueRequired': errs.push(fieldErr.required(field, msg)); break;
        case 'FieldValueForbidden': errs.push(fieldErr.forbidden(field, msg)); break;
        case 'FieldValueDuplicate': errs.push({ type: 'FieldValueDuplicate', field, value: v, detail: msg }); break;
        default: errs.push(fieldErr.invalid(field, v, msg));
      }
    }
  }
  if (isObject(v)) {
    for (const [k, child] of Object.entries(v)) {
      if (isRoot && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
      const cs = propSchema(s, k);
      if (cs) validateCel(child, correlatedOld(old, s, k, child), cs, childPath(path, k), errs, warnings, false);
    }
  } else if (Array.isArray(v) && s.items) {
    v.forEach((x, i) => validateCel(x, correlatedOld(old, s, i, x), s.items!, `${path}[${i}]`, errs, warnings, false));
  }
}

export interface SchemaResult {
  readonly errors: FieldError[];
  /** Paths of fields removed by pruning (reported as warnings, or a 400 under fieldValidation=Strict). */
  readonly pruned: string[];
  readonly celWarnings: CelWarning[];
}

/** Runs the whole pipeline on `obj` (mutated: nulls dropped, defaulted, pruned). */
export function processCustomResource(obj: Obj, schema: Schema | undefined, old: Obj | undefined, preserveAll: boolean): SchemaResult {
  const errors: FieldError[] = [];
  const celWarnings: CelWarning[] = [];
  if (!schema) return { errors, pruned: [], celWarnings };
  applyDefaults(obj, schema);
  const pruned = preserveAll ? [] : prune(obj, schema, '', true);
  validateTree(obj, schema, '', errors, true);
  validateCel(obj, old, schema, '', errors, celWarnings, true);
  return { errors, pruned, celWarnings };
}
