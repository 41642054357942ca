/**
 * The four patch formats kube-apiserver accepts. Each function is pure: it returns a new document.
 *
 * - JSON merge patch, RFC 7386 (`application/merge-patch+json`)
 * - JSON patch, RFC 6902 incl. `test` (`application/json-patch+json`)
 * - strategic merge patch (`application/strategic-merge-patch+json`): merge semantics plus list merge by the
 *   upstream `patchMergeKey`s of the built-in types this project touches, `$patch: delete|replace|merge`,
 *   `$deleteFromPrimitiveList/<f>`, `$setElementOrder/<f>` and `$retainKeys` (directives consumed, order hints ignored).
 */
import { isDeepStrictEqual } from 'node:util';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export class PatchError extends Error {
  constructor(message: string, readonly kind: 'bad-request' | 'invalid' = 'invalid') {
    super(message);
    this.name = 'PatchError';
  }
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function clone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}

// ---------------------------------------------------------------------------------------------
// RFC 7386

export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// RFC 6902

function unescapeToken(t: string): string {
  return t.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string') throw new PatchError(`invalid JSON pointer: ${JSON.stringify(p)}`, 'bad-request');
  if (p === '') return [];
  if (!p.startsWith('/')) throw new PatchError(`JSON pointer must start with "/": ${p}`, 'bad-request');
  return p.slice(1).split('/').map(unescapeToken);
}

function arrayIndex(arr: Json[], tok: string, forAdd: boolean, path: string): number {
  if (tok === '-' && forAdd) return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(tok)) throw new PatchError(`invalid array index "${tok}" in ${path}`);
  const i = Number(tok);
  if (forAdd ? i > arr.length : i >= arr.length) throw new PatchError(`array index ${i} out of bounds in ${path}`);
  return i;
}

function getAt(doc: Json, toks: string[], path: string): Json {
  let cur: Json = doc;
  for (const t of toks) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false, path)]!;
    else if (isObject(cur)) {
      if (!Object.prototype.hasOwnProperty.call(cur, t)) throw new PatchError(`missing path ${path}`);
      cur = cur[t]!;
    } else throw new PatchError(`missing path ${path}`);
  }
  return cur;
}

function parentOf(doc: Json, toks: string[], path: string): { parent: Json; last: string } {
  if (toks.length === 0) throw new PatchError(`operation on document root is not supported: ${path}`);
  return { parent: getAt(doc, toks.slice(0, -1), path), last: toks[toks.length - 1]! };
}

function addAt(doc: Json, toks: string[], value: Json, path: string): Json {
  if (toks.length === 0) return clone(value);
  const { parent, last } = parentOf(doc, toks, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true, path), 0, clone(value));
  else if (isObject(parent)) parent[last] = clone(value);
  else throw new PatchError(`cannot add to a scalar at ${path}`);
  return doc;
}

function removeAt(doc: Json, toks: string[], path: string): Json {
  const { parent, last } = parentOf(doc, toks, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false, path), 1);
  else if (isObject(parent)) {
    if (!Object.prototype.hasOwnProperty.call(parent, last)) throw new PatchError(`unable to remove nonexistent key: ${last}: missing value`);
    delete parent[last];
  } else throw new PatchError(`cannot remove from a scalar at ${path}`);
  return doc;
}

export function jsonPatch(target: Json, ops: unknown): Json {
  if (!Array.isArray(ops)) throw new PatchError('json patch must be a JSON array of operations', 'bad-request');
  let doc = clone(target);
  for (const [i, raw] of ops.entries()) {
    if (!isObject(raw)) throw new PatchError(`json patch operation ${i} is not an object`, 'bad-request');
    const op = raw.op;
    const path = raw.path as string;
    const toks = parsePointer(path);
    switch (op) {
      case 'add':
        if (!('value' in raw)) throw new PatchError(`missing value for add at ${path}`, 'bad-request');
        doc = addAt(doc, toks, raw.value!, path);
        break;
      case 'remove':
        doc = removeAt(doc, toks, path);
        break;
      case 'replace':
        if (!('value' in raw)) throw new PatchError(`missing value for replace at ${path}`, 'bad-request');
        if (toks.length === 0) { doc = clone(raw.value!); break; }
        getAt(doc, toks, path); // must exist
        doc = removeAt(doc, toks, path);
        doc = addAt(doc, toks, raw.value!, path);
        break;
      case 'move': case 'copy': {
        const fromToks = parsePointer(raw.from);
        const v = clone(getAt(doc, fromToks, String(raw.from)));
        if (op === 'move') doc = removeAt(doc, fromToks, String(raw.from));
        doc = addAt(doc, toks, v, path);
        break;
      }
      case 'test': {
        let cur: Json;
        try { cur = getAt(doc, toks, path); } catch { throw new PatchError(`testing value ${path} failed: test operation failed`); }
        if (!isDeepStrictEqual(cur, raw.value ?? null)) throw new PatchError(`testing value ${path} failed: test operation failed`);
        break;
      }
      default:
        throw new PatchError(`Unexpected kind: ${String(op)}`, 'bad-request');
    }
  }
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch

/**
 * patchMergeKey per field name for the built-in types (k8s.io/api struct tags). Lists not named here are
 * replaced wholesale, as upstream does for lists without a patch strategy. `null` = merge primitive list as a set.
 */
const MERGE_KEYS: Record<string, string | null | ((items: Json[]) => string)> = {
  containers: 'name', initContainers: 'name', ephemeralContainers: 'name', volumes: 'name', env: 'name',
  volumeMounts: 'mountPath', volumeDevices: 'devicePath', imagePullSecrets: 'name', hostAliases: 'ip',
  topologySpreadConstraints: 'topologyKey', conditions: 'type', ownerReferences: 'uid',
  resourceClaims: 'name', schedulingGates: 'name', readinessGates: 'conditionType',
  ports: (items) => (items.some((x) => isObject(x) && 'containerPort' in x) ? 'containerPort' : 'port'),
  finalizers: null,
  webhooks: 'name', subjects: 'name',
};

function mergeKeyFor(field: string, items: Json[]): string | null | undefined {
  if (!Object.prototype.hasOwnProperty.call(MERGE_KEYS, field)) return undefined;
  const k = MERGE_KEYS[field]!;
  return typeof k === 'function' ? k(items) : k;
}

export function strategicMergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) throw new PatchError('strategic merge patch must be a JSON object', 'bad-request');
  return smpObject(isObject(target) ? target : {}, patch);
}

function smpObject(target: JsonObject, patch: JsonObject): Json {
  const directive = patch.$patch;
  if (directive === 'replace') {
    const p = clone(patch);
    delete p.$patch;
    return stripDirectives(p);
  }
  if (directive === 'delete') return null as unknown as Json;
  const out = clone(target);
  const retainKeys = Array.isArray(patch.$retainKeys) ? (patch.$retainKeys as string[]) : undefined;
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys' || k.startsWith('$setElementOrder/')) continue;
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const f = k.slice('$deleteFromPrimitiveList/'.length);
      if (Array.isArray(out[f]) && Array.isArray(v)) out[f] = (out[f] as Json[]).filter((x) => !v.some((d) => isDeepStrictEqual(d, x)));
      continue;
    }
    if (v === null) { delete out[k]; continue; }
    if (isObject(v)) {
      const merged = smpObject(isObject(out[k]) ? (out[k] as JsonObject) : {}, v);
      if (merged === null) delete out[k];
      else out[k] = merged;
    } else if (Array.isArray(v)) {
      out[k] = smpList(k, Array.isArray(out[k]) ? (out[k] as Json[]) : [], v);
    } else out[k] = v;
  }
  if (retainKeys) for (const k of Object.keys(out)) if (!retainKeys.includes(k) && !(k in patch)) delete out[k];
  return out;
}

function stripDirectives(v: Json): Json {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const o: JsonObject = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) o[k] = stripDirectives(x);
  return o;
}

function smpList(field: string, target: Json[], patch: Json[]): Json[] {
  const key = mergeKeyFor(field, [...target, ...patch]);
  // `[{$patch: replace}]` replaces the whole list
  if (patch.some((x) => isObject(x) && x.$patch === 'replace')) {
    return patch.filter((x) => !(isObject(x) && x.$patch === 'replace')).map(stripDirectives);
  }
  if (key === undefined) return patch.map(stripDirectives);
  if (key === null) {
    const out = clone(target);
    for (const x of patch) if (!out.some((y) => isDeepStrictEqual(x, y))) out.push(clone(x));
    return out;
  }
  const out = clone(target);
  for (const item of patch) {
    if (!isObject(item)) { out.push(item); continue; }
    const kv = item[key];
    const idx = out.findIndex((t) => isObject(t) && isDeepStrictEqual(t[key], kv));
    if (item.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) {
      const merged = smpObject(out[idx] as JsonObject, item);
      if (merged === null) out.splice(idx, 1); else out[idx] = merged;
    } else {
      out.push(stripDirectives(item));
    }
  }
  return out;
}
