/**
 * Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which kubectl asks for on
 * `get`: custom resources print their CRD's additionalPrinterColumns (as apiextensions-apiserver does, `date`
 * cells humanised), built-in types print Name and Age only (the real server prints more columns for them).
 * JSONPath support: `.a.b`, `.a[0]`, `.a[*].b` and `.a[?(@.k=="v")].b`.
 */
import type { Obj } from './store.js';

export interface PrinterColumn { name: string; type: string; format?: string; description?: string; priority?: number; jsonPath: string }

export function wantsTable(accept: string | undefined): boolean {
  return /as=Table/.test(accept ?? '');
}

function evalPath(o: unknown, path: string): unknown[] {
  let cur: unknown[] = [o];
  const re = /\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\*\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]/gy;
  const p = path.replace(/^\{|\}$/g, '');
  let m: RegExpExecArray | null;
  re.lastIndex = 0;
  while (re.lastIndex < p.length && (m = re.exec(p))) {
    const next: unknown[] = [];
    for (const c of cur) {
      if (m[1] !== undefined) { if (c && typeof c === 'object' && !Array.isArray(c) && m[1] in (c as Obj)) next.push((c as Obj)[m[1]]); }
      else if (m[2] !== undefined) { if (Array.isArray(c) && Number(m[2]) < c.length) next.push(c[Number(m[2])]); }
      else if (m[3] !== undefined) {
        if (Array.isArray(c)) {
          for (const x of c) if (String(evalPath(x, `.${m[3]}`)[0]) === m[4]) next.push(x);
        }
      } else if (Array.isArray(c)) next.push(...c);
    }
    cur = next;
  }
  return cur;
}

export function humanDuration(fromIso: string, now = Date.now()): string {
  const s = Math.max(0, Math.floor((now - Date.parse(fromIso)) / 1000));
  if (!Number.isFinite(s)) return '<invalid>';
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  return d < 8 && h % 24 ? `${d}d${h % 24}h` : `${d}d`;
}

function cell(o: Obj, col: PrinterColumn): unknown {
  const vals = evalPath(o, col.jsonPath);
  if (vals.length === 0 || vals[0] === undefined || vals[0] === null) return null;
  const v = vals.length === 1 ? vals[0] : vals.map((x) => (typeof x === 'object' ? JSON.stringify(x) : String(x))).join(',');
  if (col.type === 'date' && typeof v === 'string') return humanDuration(v);
  if (col.type === 'integer' || col.type === 'number') return typeof v === 'number' ? v : Number(v);
  if (col.type === 'boolean') return Boolean(v);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const AGE: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.' };

/** Builds a meta.k8s.io/v1 Table for `items`; `columns` are the CRD's additionalPrinterColumns, if any. */
export function toTable(items: readonly Obj[], columns: readonly PrinterColumn[] | undefined, listMeta: Obj): Obj {
  const cols = columns && columns.length ? columns : [AGE];
  return {
    kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: listMeta,
    columnDefinitions: [
      { name: 'Name', type: 'string', format: 'name', description: 'Name must be unique within a namespace.', priority: 0 },
      ...cols.map((c) => ({ name: c.name, type: c.type, format: c.format ?? '', description: c.description ?? '', priority: c.priority ?? 0 })),
    ],
    rows: items.map((o) => ({
      cells: [o.metadata?.name ?? '', ...cols.map((c) => cell(o, c))],
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
    })),
  };
}
