/**
 * A small RFC 6902 (JSON Patch) applier for tests: add, remove, replace, test, with RFC 6901
 * pointers ("~1" is "/", "~0" is "~", "-" appends). Strict like the API server: a pointer into
 * a missing parent, an out-of-range index or removing a missing member throws.
 */
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export class JsonPatchError extends Error {}

function unescape(s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(p: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw new JsonPatchError(`pointer must start with "/": ${p}`);
  return p.slice(1).split('/').map(unescape);
}

function index(arr: Json[], tok: string, forAdd: boolean, p: string): number {
  if (tok === '-' && forAdd) return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(tok)) throw new JsonPatchError(`bad array index "${tok}" in ${p}`);
  const i = Number(tok);
  if (i > arr.length || (!forAdd && i >= arr.length)) throw new JsonPatchError(`index ${i} out of range in ${p}`);
  return i;
}

export function applyJsonPatch<T>(doc: T, ops: ReadonlyArray<{ op: string; path: string; value?: unknown }>): T {
  let root = structuredClone(doc) as unknown as Json;
  for (const o of ops) {
    const toks = parsePointer(o.path);
    if (toks.length === 0) {
      if (o.op === 'add' || o.op === 'replace') { root = structuredClone(o.value) as Json; continue; }
      throw new JsonPatchError(`unsupported op on root: ${o.op}`);
    }
    let parent: Json = root;
    for (const t of toks.slice(0, -1)) {
      if (Array.isArray(parent)) parent = parent[index(parent, t, false, o.path)]!;
      else if (parent && typeof parent === 'object' && t in parent) parent = parent[t]!;
      else throw new JsonPatchError(`path ${o.path}: "${t}" does not exist`);
    }
    const last = toks[toks.length - 1]!;
    const value = structuredClone(o.value) as Json;
    if (Array.isArray(parent)) {
      if (o.op === 'add') parent.splice(index(parent, last, true, o.path), 0, value);
      else if (o.op === 'remove') parent.splice(index(parent, last, false, o.path), 1);
      else if (o.op === 'replace') parent[index(parent, last, false, o.path)] = value;
      else if (o.op === 'test') {
        if (JSON.stringify(parent[index(parent, last, false, o.path)]) !== JSON.stringify(value)) throw new JsonPatchError(`test failed at ${o.path}`);
      } else throw new JsonPatchError(`unsupported op ${o.op}`);
    } else if (parent && typeof parent === 'object') {
      if (o.op === 'add') parent[last] = value;
      else if (o.op === 'remove' || o.op === 'replace') {
        if (!(last in parent)) throw new JsonPatchError(`path ${o.path} does not exist (${o.op})`);
        if (o.op === 'remove') delete parent[last]; else parent[last] = value;
      } else if (o.op === 'test') {
        if (JSON.stringify(parent[last]) !== JSON.stringify(value)) throw new JsonPatchError(`test failed at ${o.path}`);
      } else throw new JsonPatchError(`unsupported op ${o.op}`);
    } else throw new JsonPatchError(`path ${o.path}: parent is not a container`);
  }
  return root as unknown as T;
}
