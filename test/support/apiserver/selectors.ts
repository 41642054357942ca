/**
 * Label and field selectors as kube-apiserver parses them
 * (k8s.io/apimachinery/pkg/labels and pkg/fields).
 *
 * Label grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, `a>1`, `a<1`, comma-joined (AND).
 * `!=` and `notin` match objects without the label, as upstream.
 */
import { badRequest } from './status.js';

export type LabelRequirement =
  | { readonly op: 'in' | 'notin'; readonly key: string; readonly values: readonly string[] }
  | { readonly op: 'exists' | '!'; readonly key: string }
  | { readonly op: 'gt' | 'lt'; readonly key: string; readonly value: number };

export type LabelSelector = readonly LabelRequirement[];

const KEY_RE = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const VALUE_RE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function checkKey(key: string, raw: string): void {
  if (!KEY_RE.test(key)) throw badRequest(`unable to parse requirement: invalid label key "${key}": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (selector "${raw}")`);
}
function checkValue(v: string, raw: string): void {
  if (v.length > 63 || !VALUE_RE.test(v)) throw badRequest(`unable to parse requirement: invalid label value: "${v}" (selector "${raw}")`);
}

/** Splits on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) { out.push(cur); cur = ''; continue; }
    cur += ch;
  }
  out.push(cur);
  return out;
}

export function parseLabelSelector(raw: string | undefined | null): LabelSelector {
  if (!raw || raw.trim() === '') return [];
  const reqs: LabelRequirement[] = [];
  for (const partRaw of splitTop(raw)) {
    const part = partRaw.trim();
    if (part === '') throw badRequest(`unable to parse requirement: found '', expected: identifier (selector "${raw}")`);
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^([^\s!=<>(),]+)\s+(in|notin)\s*\(([^()]*)\)$/))) {
      const key = m[1]!;
      checkKey(key, raw);
      const values = m[3]!.split(',').map((v) => v.trim());
      for (const v of values) checkValue(v, raw);
      reqs.push({ op: m[2] as 'in' | 'notin', key, values });
    } else if ((m = part.match(/^([^\s!=<>(),]+)\s*(==|=|!=)\s*([^\s!=<>(),]*)$/))) {
      const key = m[1]!;
      checkKey(key, raw);
      checkValue(m[3]!, raw);
      reqs.push({ op: m[2] === '!=' ? 'notin' : 'in', key, values: [m[3]!] });
    } else if ((m = part.match(/^([^\s!=<>(),]+)\s*([<>])\s*(-?\d+)$/))) {
      checkKey(m[1]!, raw);
      reqs.push({ op: m[2] === '>' ? 'gt' : 'lt', key: m[1]!, value: Number(m[3]) });
    } else if ((m = part.match(/^!\s*([^\s!=<>(),]+)$/))) {
      checkKey(m[1]!, raw);
      reqs.push({ op: '!', key: m[1]! });
    } else if ((m = part.match(/^([^\s!=<>(),]+)$/))) {
      checkKey(m[1]!, raw);
      reqs.push({ op: 'exists', key: m[1]! });
    } else {
      throw badRequest(`unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt (selector "${raw}")`);
    }
  }
  return reqs;
}

export function matchLabels(sel: LabelSelector, labels: Readonly<Record<string, string>> | undefined): boolean {
  const l = labels ?? {};
  for (const r of sel) {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case 'in': if (!has || !r.values.includes(v!)) return false; break;
      case 'notin': if (has && r.values.includes(v!)) return false; break;
      case 'exists': if (!has) return false; break;
      case '!': if (has) return false; break;
      case 'gt': case 'lt': {
        if (!has) return false;
        const n = Number(v);
        if (!Number.isInteger(n)) return false;
        if (r.op === 'gt' ? !(n > r.value) : !(n < r.value)) return false;
        break;
      }
    }
  }
  return true;
}

/** metav1.LabelSelector (matchLabels + matchExpressions), as used by webhook namespaceSelector/objectSelector. */
export function matchLabelSelectorObject(sel: unknown, labels: Readonly<Record<string, string>> | undefined): boolean {
  if (sel === undefined || sel === null) return true;
  const s = sel as { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] };
  const l = labels ?? {};
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) if (l[k] !== v) return false;
  for (const e of s.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    switch (e.operator) {
      case 'In': if (!has || !(e.values ?? []).includes(l[e.key]!)) return false; break;
      case 'NotIn': if (has && (e.values ?? []).includes(l[e.key]!)) return false; break;
      case 'Exists': if (!has) return false; break;
      case 'DoesNotExist': if (has) return false; break;
      default: return false;
    }
  }
  return true;
}

export interface FieldRequirement { readonly field: string; readonly op: '=' | '!='; readonly value: string }
export type FieldSelector = readonly FieldRequirement[];

/** Parses `a=b,c!=d` (`==` accepted). `supported` is the list of fields the resource allows. */
export function parseFieldSelector(raw: string | undefined | null, supported: readonly string[]): FieldSelector {
  if (!raw || raw.trim() === '') return [];
  const out: FieldRequirement[] = [];
  for (const partRaw of raw.split(',')) {
    const part = partRaw.trim();
    const m = part.match(/^([^=!]+?)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid selector: '${raw}'; can't understand '${part}'`);
    const field = m[1]!.trim();
    if (!supported.includes(field)) {
      throw badRequest(`"${field}" is not a known field selector: only "${supported.join('", "')}"`);
    }
    out.push({ field, op: m[2] === '!=' ? '!=' : '=', value: m[3]!.trim() });
  }
  return out;
}

export function matchFields(sel: FieldSelector, get: (field: string) => string): boolean {
  for (const r of sel) {
    const v = get(r.field);
    if (r.op === '=' ? v !== r.value : v === r.value) return false;
  }
  return true;
}
