/**
 * Reads the Helm chart without a helm binary: templates are turned into plain YAML by dropping
 * lines that hold only template actions and replacing inline actions with a placeholder. That is
 * enough to check the static shape of every manifest (kinds, apiVersions, RBAC rules, fixed
 * fields); values are checked separately against values.yaml and values.schema.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from '../helpers/env.js';

export const CHART_DIR = path.join(REPO_ROOT, 'charts/lockmig');
export const TEMPLATES_DIR = path.join(CHART_DIR, 'templates');
export const PLACEHOLDER = 'TPL';

export function readChartFile(rel: string): string {
  return fs.readFileSync(path.join(CHART_DIR, rel), 'utf8');
}

export function templateFiles(): string[] {
  return fs.readdirSync(TEMPLATES_DIR).filter((f) => /\.(ya?ml|tpl|txt)$/.test(f)).sort();
}

/** Removes `{{/* … *\/}}` comments (with or without trim markers). */
export function stripComments(text: string): string {
  return text.replace(/\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g, '');
}

/** Template text → YAML text (see the module comment). */
export function stripTemplate(text: string): string {
  const out: string[] = [];
  for (const line of stripComments(text).split('\n')) {
    if (/^\s*(\{\{[\s\S]*?\}\}\s*)+$/.test(line)) continue;
    out.push(line.replace(/\{\{[\s\S]*?\}\}/g, PLACEHOLDER));
  }
  return out.join('\n');
}

export interface Manifest {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  readonly [k: string]: unknown;
}

/** Every YAML document of a template (empty documents dropped); throws with the file name on a YAML error. */
export function templateDocs(file: string): Manifest[] {
  const text = stripTemplate(fs.readFileSync(path.join(TEMPLATES_DIR, file), 'utf8'));
  const docs = YAML.parseAllDocuments(text);
  const out: Manifest[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const v = d.toJS() as Manifest | null;
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

/** `.Values.a.b.c` paths a template reads (also `$.Values…`). */
export function valuesPaths(text: string): string[] {
  const out = new Set<string>();
  for (const m of stripComments(text).matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) out.add(m[1]!.slice(1));
  return [...out].sort();
}

/** Count of block openers and `end`s in a template. */
export function blockBalance(text: string): { opens: number; ends: number; problems: string[] } {
  let depth = 0;
  let opens = 0;
  let ends = 0;
  const problems: string[] = [];
  const lines = stripComments(text).split('\n');
  lines.forEach((line, i) => {
    for (const m of line.matchAll(/\{\{-?\s*(if|with|range|define|block|end|else)\b/g)) {
      const kw = m[1];
      if (kw === 'end') { ends++; depth--; if (depth < 0) problems.push(`line ${i + 1}: {{ end }} without an open block`); }
      else if (kw === 'else') { if (depth <= 0) problems.push(`line ${i + 1}: {{ else }} outside a block`); }
      else { opens++; depth++; }
    }
  });
  if (depth > 0) problems.push(`${depth} block(s) never closed`);
  return { opens, ends, problems };
}

/** Follows a dotted path into a parsed values tree. */
export function hasPath(values: unknown, dotted: string): boolean {
  let cur: unknown = values;
  for (const key of dotted.split('.')) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur) || !(key in (cur as Record<string, unknown>))) return false;
    cur = (cur as Record<string, unknown>)[key];
  }
  return true;
}
