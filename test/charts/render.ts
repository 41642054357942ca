/**
 * A small renderer for the subset of Go templates + Sprig + Helm built-ins that this chart uses,
 * so tests can render the chart with real values and parse the resulting YAML (indentation
 * mistakes, wrong variable names and unknown functions fail here instead of at `helm install`).
 * It is a test aid, not Helm: an unknown function or syntax throws rather than guessing.
 *
 * Supported: text with `{{- -}}` trimming, comments, if/else if/else, with/else, range over lists
 * and maps (with `$k, $v :=`), define + include, variables (`:=`, `=`), pipelines, parentheses,
 * field chains on `.`, `$` and variables, string/number/bool/nil literals.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

type Value = unknown;
type Node =
  | { t: 'text'; s: string }
  | { t: 'action'; pipe: Pipe }
  | { t: 'if' | 'with'; branches: Array<{ cond: Pipe | null; body: Node[] }> }
  | { t: 'range'; vars: string[]; pipe: Pipe; body: Node[]; elseBody: Node[] };

interface Pipe { decl?: { vars: string[]; op: ':=' | '=' }; cmds: Cmd[] }
type Arg =
  | { k: 'lit'; v: Value }
  | { k: 'field'; base: 'dot' | 'root' | string; path: string[] }
  | { k: 'fn'; name: string }
  | { k: 'sub'; pipe: Pipe };
type Cmd = Arg[];

export class TemplateError extends Error {}

// ---------------------------------------------------------------- lexing into text / actions
interface Piece { kind: 'text' | 'action'; s: string }

function lex(src: string): Piece[] {
  const out: Piece[] = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) { out.push({ kind: 'text', s: src.slice(i) }); break; }
    let text = src.slice(i, open);
    let j = open + 2;
    if (src[j] === '-' && /\s/.test(src[j + 1] ?? '')) { text = text.replace(/\s+$/, ''); j++; }
    const close = findClose(src, j);
    let inner = src.slice(j, close);
    let after = close + 2;
    if (/\s-$/.test(inner)) { inner = inner.slice(0, -1); after = skipSpace(src, after); }
    out.push({ kind: 'text', s: text });
    out.push({ kind: 'action', s: inner.trim() });
    i = after;
  }
  return out;
}

function findClose(src: string, from: number): number {
  let i = from;
  let inStr: string | null = null;
  for (; i < src.length; i++) {
    const c = src[i]!;
    if (inStr) { if (c === '\\' && inStr === '"') i++; else if (c === inStr) inStr = null; continue; }
    if (c === '"' || c === '`') { inStr = c; continue; }
    if (src.startsWith('/*', i)) { const e = src.indexOf('*/', i); if (e < 0) throw new TemplateError('unclosed comment'); i = e + 1; continue; }
    if (src.startsWith('}}', i)) return i;
  }
  throw new TemplateError('unclosed action');
}

function skipSpace(src: string, i: number): number {
  while (i < src.length && /\s/.test(src[i]!)) i++;
  return i;
}

// ---------------------------------------------------------------- tokens and pipelines
function tokenize(s: string): string[] {
  const toks: string[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (/\s/.test(c)) { i++; continue; }
    if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') { if (s[j] === '\\') j++; j++; }
      toks.push(s.slice(i, j + 1)); i = j + 1; continue;
    }
    if (c === '`') { const j = s.indexOf('`', i + 1); toks.push(s.slice(i, j + 1)); i = j + 1; continue; }
    if (c === '(' || c === ')' || c === '|' || c === ',') { toks.push(c); i++; continue; }
    if (s.startsWith(':=', i)) { toks.push(':='); i += 2; continue; }
    if (c === '=') { toks.push('='); i++; continue; }
    let j = i;
    while (j < s.length && !/[\s()|,]/.test(s[j]!) && !s.startsWith(':=', j)) j++;
    toks.push(s.slice(i, j)); i = j;
  }
  return toks;
}

function parsePipe(toks: string[], pos = { i: 0 }, stopAtParen = false): Pipe {
  const pipe: Pipe = { cmds: [] };
  // declaration: $a := …, $a, $b := …, $a = …
  const save = pos.i;
  const vars: string[] = [];
  while (toks[pos.i]?.startsWith('$') && !toks[pos.i]!.includes('.')) {
    vars.push(toks[pos.i]!); pos.i++;
    if (toks[pos.i] === ',') { pos.i++; continue; }
    break;
  }
  if (vars.length > 0 && (toks[pos.i] === ':=' || toks[pos.i] === '=')) {
    pipe.decl = { vars, op: toks[pos.i] as ':=' | '=' }; pos.i++;
  } else {
    pos.i = save;
  }
  let cmd: Cmd = [];
  while (pos.i < toks.length) {
    const t = toks[pos.i]!;
    if (t === ')') { if (!stopAtParen) throw new TemplateError('unexpected )'); break; }
    pos.i++;
    if (t === '|') { pipe.cmds.push(cmd); cmd = []; continue; }
    if (t === '(') { cmd.push({ k: 'sub', pipe: parsePipe(toks, pos, true) }); if (toks[pos.i] !== ')') throw new TemplateError('missing )'); pos.i++; continue; }
    cmd.push(parseArg(t));
  }
  pipe.cmds.push(cmd);
  if (pipe.cmds.some((c) => c.length === 0)) throw new TemplateError(`empty command in pipeline: ${toks.join(' ')}`);
  return pipe;
}

function parseArg(t: string): Arg {
  if (t.startsWith('"')) return { k: 'lit', v: JSON.parse(t) as string };
  if (t.startsWith('`')) return { k: 'lit', v: t.slice(1, -1) };
  if (/^-?\d+(\.\d+)?$/.test(t)) return { k: 'lit', v: Number(t) };
  if (t === 'true' || t === 'false') return { k: 'lit', v: t === 'true' };
  if (t === 'nil') return { k: 'lit', v: null };
  if (t === '.') return { k: 'field', base: 'dot', path: [] };
  if (t.startsWith('.')) return { k: 'field', base: 'dot', path: t.slice(1).split('.') };
  if (t.startsWith('$')) {
    const [v, ...rest] = t.split('.');
    return { k: 'field', base: v === '$' ? 'root' : v!, path: rest };
  }
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(t)) return { k: 'fn', name: t };
  throw new TemplateError(`cannot parse "${t}"`);
}

// ---------------------------------------------------------------- tree
function parse(pieces: Piece[], defines: Map<string, Node[]>): Node[] {
  let i = 0;
  function block(stop: readonly string[], top = false): { nodes: Node[]; end: string } {
    const nodes: Node[] = [];
    while (i < pieces.length) {
      const p = pieces[i++]!;
      if (p.kind === 'text') { if (p.s) nodes.push({ t: 'text', s: p.s }); continue; }
      const a = p.s;
      if (a.startsWith('/*')) continue;
      const kw = /^(\w+)\b/.exec(a)?.[1];
      if (kw === 'end' && top) throw new TemplateError('{{ end }} without an open block');
      if (kw === 'end' || (kw === 'else' && stop.includes('else'))) return { nodes, end: a };
      if (kw === 'if' || kw === 'with') {
        const branches: Array<{ cond: Pipe | null; body: Node[] }> = [];
        let cond: Pipe | null = parsePipe(tokenize(a.slice(kw.length)));
        for (;;) {
          const r = block(['else']);
          branches.push({ cond, body: r.nodes });
          if (r.end === 'end') break;
          const rest = r.end.slice(4).trim();
          if (rest.startsWith('if ')) cond = parsePipe(tokenize(rest.slice(3)));
          else if (rest === '') cond = null;
          else throw new TemplateError(`unsupported else clause "${r.end}"`);
        }
        nodes.push({ t: kw, branches });
        continue;
      }
      if (kw === 'range') {
        const pipe = parsePipe(tokenize(a.slice(5)));
        const vars = pipe.decl?.vars ?? [];
        delete pipe.decl;
        const r = block(['else']);
        let elseBody: Node[] = [];
        if (r.end !== 'end') elseBody = block([]).nodes;
        nodes.push({ t: 'range', vars, pipe, body: r.nodes, elseBody });
        continue;
      }
      if (kw === 'define') {
        const name = JSON.parse(a.slice(6).trim()) as string;
        defines.set(name, block([]).nodes);
        continue;
      }
      if (kw === 'else') throw new TemplateError('else outside a block');
      if (kw === 'template' || kw === 'block') throw new TemplateError(`unsupported action "${a}"`);
      nodes.push({ t: 'action', pipe: parsePipe(tokenize(a)) });
    }
    if (!top) throw new TemplateError('missing {{ end }}');
    return { nodes, end: 'eof' };
  }
  const r = block([], true);
  return r.nodes;
}

// ---------------------------------------------------------------- evaluation
export function truthy(v: Value): boolean {
  if (v === null || v === undefined || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  return true;
}

function str(v: Value): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function indentLines(s: string, n: number): string {
  const pad = ' '.repeat(n);
  return s.split('\n').map((l) => pad + l).join('\n');
}

function goPrintf(fmt: string, args: Value[]): string {
  let k = 0;
  return fmt.replace(/%([sdvq%])/g, (_, c: string) => {
    if (c === '%') return '%';
    const a = args[k++];
    if (c === 'd') { if (typeof a !== 'number' || !Number.isInteger(a)) throw new TemplateError(`printf %d of ${JSON.stringify(a)}`); return String(a); }
    if (c === 'q') return JSON.stringify(str(a));
    return str(a);
  });
}

export interface RenderContext {
  readonly Values: Record<string, unknown>;
  readonly Release: { Name: string; Namespace: string; Service: string };
  readonly Chart: Record<string, unknown>;
  readonly Capabilities: { APIVersions: { Has(v: string): boolean }; KubeVersion: { Version: string } };
  readonly Template?: { Name: string };
}

export interface RenderOptions {
  /** what `lookup` returns (default: nothing exists) */
  readonly lookup?: (apiVersion: string, kind: string, ns: string, name: string) => Record<string, unknown>;
}

type Scope = Map<string, Value>[];

class Renderer {
  constructor(private readonly defines: Map<string, Node[]>, private readonly root: Value, private readonly opts: RenderOptions) {}

  private funcs: Record<string, (...a: Value[]) => Value> = {
    include: (name, dot) => {
      const body = this.defines.get(str(name));
      if (!body) throw new TemplateError(`include of undefined template "${str(name)}"`);
      // Go sets $ to the data a template is executed with: inside an included template, $ is its dot
      return this.run(body, dot, [new Map([['$', dot]])]);
    },
    toYaml: (v) => (v === null || v === undefined ? 'null' : YAML.stringify(v, { lineWidth: 0 }).replace(/\n$/, '')),
    toJson: (v) => JSON.stringify(v ?? null),
    nindent: (n, s) => `\n${indentLines(str(s), Number(n))}`,
    indent: (n, s) => indentLines(str(s), Number(n)),
    quote: (...a) => a.map((x) => JSON.stringify(str(x))).join(' '),
    default: (d, v) => (truthy(v) ? v : d),
    printf: (fmt, ...a) => goPrintf(str(fmt), a),
    trunc: (n, s) => str(s).slice(0, Number(n)),
    trimSuffix: (suf, s) => (str(s).endsWith(str(suf)) ? str(s).slice(0, -str(suf).length) : str(s)),
    contains: (sub, s) => str(s).includes(str(sub)),
    replace: (a, b, s) => str(s).split(str(a)).join(str(b)),
    b64enc: (s) => Buffer.from(str(s)).toString('base64'),
    int: (v) => Math.trunc(Number(v)),
    mul: (...a) => a.reduce<number>((x, y) => x * Number(y), 1),
    gt: (a, b) => Number(a) > Number(b),
    eq: (a, ...b) => b.some((x) => x === a),
    and: (...a) => a.find((x) => !truthy(x)) ?? a[a.length - 1],
    or: (...a) => a.find((x) => truthy(x)) ?? a[a.length - 1],
    not: (a) => !truthy(a),
    hasKey: (m, k) => typeof m === 'object' && m !== null && Object.prototype.hasOwnProperty.call(m, str(k)),
    index: (m, ...ks) => ks.reduce<Value>((acc, k) => (acc as Record<string, Value> | null)?.[str(k)], m),
    list: (...a) => a,
    append: (l, v) => [...(l as Value[]), v],
    join: (sep, l) => (l as Value[]).map(str).join(str(sep)),
    dict: (...a) => { const o: Record<string, Value> = {}; for (let i = 0; i < a.length; i += 2) o[str(a[i])] = a[i + 1]; return o; },
    genCA: (cn, days) => ({ Cert: `-----BEGIN CERTIFICATE-----\nCA ${str(cn)} ${str(days)}\n-----END CERTIFICATE-----\n`, Key: '-----BEGIN RSA PRIVATE KEY-----\nCA\n-----END RSA PRIVATE KEY-----\n' }),
    genSignedCert: (cn, _ips, dns, days, ca) => {
      if (!Array.isArray(dns) || typeof (ca as { Cert?: unknown })?.Cert !== 'string') throw new TemplateError('genSignedCert: bad arguments');
      return { Cert: `-----BEGIN CERTIFICATE-----\n${str(cn)} ${dns.join(',')} ${str(days)}\n-----END CERTIFICATE-----\n`, Key: '-----BEGIN RSA PRIVATE KEY-----\nLEAF\n-----END RSA PRIVATE KEY-----\n' };
    },
    lookup: (av, kind, ns, name) => this.opts.lookup?.(str(av), str(kind), str(ns), str(name)) ?? {},
  };

  run(nodes: Node[], dot: Value, scope: Scope): string {
    let out = '';
    const local: Scope = [...scope, new Map()];
    for (const n of nodes) {
      switch (n.t) {
        case 'text': out += n.s; break;
        case 'action': {
          const v = this.pipe(n.pipe, dot, local);
          if (!n.pipe.decl) out += str(v);
          break;
        }
        case 'if':
        case 'with': {
          for (const b of n.branches) {
            if (b.cond === null) { out += this.run(b.body, dot, local); break; }
            const v = this.pipe(b.cond, dot, local);
            if (truthy(v)) { out += this.run(b.body, n.t === 'with' ? v : dot, local); break; }
          }
          break;
        }
        case 'range': {
          const v = this.pipe(n.pipe, dot, local);
          const entries: Array<[Value, Value]> = Array.isArray(v) ? v.map((x, i) => [i, x])
            : v && typeof v === 'object' ? Object.keys(v).sort().map((k) => [k, (v as Record<string, Value>)[k]]) : [];
          if (entries.length === 0) { out += this.run(n.elseBody, dot, local); break; }
          for (const [k, x] of entries) {
            const s = new Map<string, Value>();
            if (n.vars.length === 1) s.set(n.vars[0]!, x);
            if (n.vars.length === 2) { s.set(n.vars[0]!, k); s.set(n.vars[1]!, x); }
            out += this.run(n.body, x, [...local, s]);
          }
          break;
        }
      }
    }
    return out;
  }

  private lookupVar(name: string, scope: Scope): Value {
    for (let i = scope.length - 1; i >= 0; i--) if (scope[i]!.has(name)) return scope[i]!.get(name);
    throw new TemplateError(`undefined variable ${name}`);
  }

  private assignVar(name: string, v: Value, scope: Scope): void {
    for (let i = scope.length - 1; i >= 0; i--) if (scope[i]!.has(name)) { scope[i]!.set(name, v); return; }
    throw new TemplateError(`assignment to undeclared variable ${name}`);
  }

  private pipe(p: Pipe, dot: Value, scope: Scope): Value {
    let prev: Value;
    let first = true;
    for (const cmd of p.cmds) {
      prev = this.cmd(cmd, dot, scope, first ? undefined : { v: prev });
      first = false;
    }
    if (p.decl) {
      if (p.decl.op === ':=') scope[scope.length - 1]!.set(p.decl.vars[0]!, prev);
      else this.assignVar(p.decl.vars[0]!, prev, scope);
    }
    return prev;
  }

  private cmd(cmd: Cmd, dot: Value, scope: Scope, piped?: { v: Value }): Value {
    const [head, ...rest] = cmd;
    const args = (): Value[] => {
      const a = rest.map((x) => this.arg(x, dot, scope));
      if (piped) a.push(piped.v);
      return a;
    };
    if (head!.k === 'fn') {
      const f = this.funcs[head!.name];
      if (!f) throw new TemplateError(`unknown function "${head!.name}"`);
      return f(...args());
    }
    if (rest.length > 0 || piped) {
      // method call: .Capabilities.APIVersions.Has "x"
      if (head!.k === 'field' && head!.path.length > 0) {
        const owner = this.arg({ ...head!, path: head!.path.slice(0, -1) }, dot, scope) as Record<string, unknown>;
        const m = owner?.[head!.path[head!.path.length - 1]!];
        if (typeof m === 'function') return (m as (...a: Value[]) => Value).apply(owner, args());
      }
      throw new TemplateError('arguments given to a non-function');
    }
    return this.arg(head!, dot, scope);
  }

  private arg(a: Arg, dot: Value, scope: Scope): Value {
    switch (a.k) {
      case 'lit': return a.v;
      case 'sub': return this.pipe(a.pipe, dot, scope);
      case 'fn': {
        const f = this.funcs[a.name];
        if (!f) throw new TemplateError(`unknown function "${a.name}"`);
        return f();
      }
      case 'field': {
        let v: Value = a.base === 'dot' ? dot : a.base === 'root' ? this.lookupVar('$', scope) : this.lookupVar(a.base, scope);
        for (const k of a.path) {
          if (v === null || v === undefined) return undefined;
          if (typeof v !== 'object') throw new TemplateError(`cannot read .${k} of ${typeof v}`);
          v = (v as Record<string, Value>)[k];
        }
        return v;
      }
    }
  }
}

export interface RenderedChart {
  /** template file → rendered text */
  readonly files: Map<string, string>;
  /** every non-empty YAML document of every manifest template */
  readonly docs: Array<Record<string, any>>;
}

/** Deep merge of user values over defaults (maps merge, everything else replaces), like Helm's --set/-f. */
export function mergeValues(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (base && over && typeof base === 'object' && typeof over === 'object' && !Array.isArray(base) && !Array.isArray(over)) {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
    for (const [k, v] of Object.entries(over as Record<string, unknown>)) out[k] = mergeValues(out[k], v);
    return out;
  }
  return over;
}

export function renderChart(chartDir: string, opts: {
  values?: Record<string, unknown>; release?: string; namespace?: string; apiVersions?: readonly string[]; lookup?: RenderOptions['lookup'];
} = {}): RenderedChart {
  const chart = YAML.parse(fs.readFileSync(path.join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  const defaults = YAML.parse(fs.readFileSync(path.join(chartDir, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  const values = mergeValues(defaults, opts.values ?? {}) as Record<string, unknown>;
  const apis = new Set(opts.apiVersions ?? []);
  const ctx: RenderContext = {
    Values: values,
    Release: { Name: opts.release ?? 'lockmig', Namespace: opts.namespace ?? 'lockmig-system', Service: 'Helm' },
    Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion },
    Capabilities: { APIVersions: { Has: (v: string) => apis.has(v) }, KubeVersion: { Version: 'v1.30.0' } },
  };
  const dir = path.join(chartDir, 'templates');
  const names = fs.readdirSync(dir).sort();
  const defines = new Map<string, Node[]>();
  const trees = new Map<string, Node[]>();
  for (const n of names) {
    try {
      trees.set(n, parse(lex(fs.readFileSync(path.join(dir, n), 'utf8')), defines));
    } catch (err) {
      throw new TemplateError(`${n}: ${(err as Error).message}`);
    }
  }
  const r = new Renderer(defines, ctx, { lookup: opts.lookup });
  const files = new Map<string, string>();
  const docs: Array<Record<string, any>> = [];
  for (const [n, tree] of trees) {
    if (n.startsWith('_')) continue;
    let text: string;
    try {
      text = r.run(tree, ctx, [new Map([['$', ctx]])]);
    } catch (err) {
      throw new TemplateError(`${n}: ${(err as Error).message}`);
    }
    files.set(n, text);
    if (!n.endsWith('.yaml')) continue;
    for (const d of YAML.parseAllDocuments(text)) {
      if (d.errors.length > 0) throw new TemplateError(`${n}: rendered YAML is invalid: ${d.errors[0]!.message}\n${text}`);
      const v = d.toJS() as Record<string, any> | null;
      if (v) docs.push(v);
    }
  }
  return { files, docs };
}
