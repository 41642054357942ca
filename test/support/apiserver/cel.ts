/**
 * A deliberately small CEL evaluator for `x-kubernetes-validations` rules.
 *
 * Supported: literals (int, double, string with '…' or "…", true/false/null, lists, maps), `self`, `oldSelf`,
 * field selection `a.b`, indexing `a[i]` / `a['k']`, `has(a.b)`, `! - * / % + -`, comparisons, `in`, `&&` `||`
 * (with CEL's error absorption), `?:`, `size(x)`/`x.size()`, `startsWith`, `endsWith`, `contains`, `matches`,
 * `all`/`exists`/`exists_one`/`map`/`filter` macros, `int()`, `string()`, `double()`.
 *
 * Anything else fails to compile with `CelError.unsupported = true`; the caller skips such a rule with a warning.
 * A real kube-apiserver enforces every rule, so a test that passes here can still be rejected by a real cluster
 * when it relies on an unsupported rule.
 */
import { isDeepStrictEqual } from 'node:util';

export class CelError extends Error {
  constructor(message: string, readonly unsupported = true) {
    super(message);
    this.name = 'CelError';
  }
}

type Node =
  | { t: 'lit'; v: unknown }
  | { t: 'id'; name: string }
  | { t: 'sel'; obj: Node; field: string }
  | { t: 'idx'; obj: Node; index: Node }
  | { t: 'call'; fn: string; target?: Node; args: Node[] }
  | { t: 'un'; op: string; x: Node }
  | { t: 'bin'; op: string; l: Node; r: Node }
  | { t: 'cond'; c: Node; a: Node; b: Node }
  | { t: 'list'; items: Node[] }
  | { t: 'map'; entries: [Node, Node][] };

interface Tok { k: 'num' | 'str' | 'id' | 'op' | 'eof'; v: string }

function lex(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) { i++; continue; }
    if (/[0-9]/.test(c)) {
      const m = src.slice(i).match(/^(0x[0-9a-fA-F]+|\d+(\.\d+)?([eE][+-]?\d+)?)[uU]?/)!;
      out.push({ k: 'num', v: m[0].replace(/[uU]$/, '') });
      i += m[0].length;
      continue;
    }
    if (c === '"' || c === "'") {
      let j = i + 1;
      let s = '';
      while (j < src.length && src[j] !== c) {
        if (src[j] === '\\') {
          const n = src[j + 1];
          s += n === 'n' ? '\n' : n === 't' ? '\t' : n === '\\' ? '\\' : n ?? '';
          j += 2;
        } else s += src[j++];
      }
      if (j >= src.length) throw new CelError('unterminated string literal');
      out.push({ k: 'str', v: s });
      i = j + 1;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      const m = src.slice(i).match(/^[A-Za-z_][A-Za-z0-9_]*/)!;
      out.push({ k: 'id', v: m[0] });
      i += m[0].length;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (['==', '!=', '<=', '>=', '&&', '||'].includes(two)) { out.push({ k: 'op', v: two }); i += 2; continue; }
    if ('+-*/%<>!?:.,()[]{}'.includes(c)) { out.push({ k: 'op', v: c }); i++; continue; }
    throw new CelError(`unexpected character '${c}'`);
  }
  out.push({ k: 'eof', v: '' });
  return out;
}

class Parser {
  private p = 0;
  constructor(private readonly toks: Tok[]) {}
  private peek(): Tok { return this.toks[this.p]!; }
  private next(): Tok { return this.toks[this.p++]!; }
  private accept(v: string): boolean {
    const t = this.peek();
    if ((t.k === 'op' || t.k === 'id') && t.v === v) { this.p++; return true; }
    return false;
  }
  private expect(v: string): void {
    if (!this.accept(v)) throw new CelError(`expected '${v}' but found '${this.peek().v}'`);
  }
  parseAll(): Node {
    const n = this.expr();
    if (this.peek().k !== 'eof') throw new CelError(`unexpected '${this.peek().v}'`);
    return n;
  }
  expr(): Node {
    const c = this.or();
    if (this.accept('?')) {
      const a = this.or();
      this.expect(':');
      const b = this.expr();
      return { t: 'cond', c, a, b };
    }
    return c;
  }
  private or(): Node {
    let l = this.and();
    while (this.accept('||')) l = { t: 'bin', op: '||', l, r: this.and() };
    return l;
  }
  private and(): Node {
    let l = this.rel();
    while (this.accept('&&')) l = { t: 'bin', op: '&&', l, r: this.rel() };
    return l;
  }
  private rel(): Node {
    let l = this.add();
    for (;;) {
      const t = this.peek();
      if ((t.k === 'op' && ['==', '!=', '<', '<=', '>', '>='].includes(t.v)) || (t.k === 'id' && t.v === 'in')) {
        this.p++;
        l = { t: 'bin', op: t.v, l, r: this.add() };
      } else return l;
    }
  }
  private add(): Node {
    let l = this.mul();
    for (;;) {
      const t = this.peek();
      if (t.k === 'op' && (t.v === '+' || t.v === '-')) { this.p++; l = { t: 'bin', op: t.v, l, r: this.mul() }; } else return l;
    }
  }
  private mul(): Node {
    let l = this.unary();
    for (;;) {
      const t = this.peek();
      if (t.k === 'op' && ['*', '/', '%'].includes(t.v)) { this.p++; l = { t: 'bin', op: t.v, l, r: this.unary() }; } else return l;
    }
  }
  private unary(): Node {
    if (this.accept('!')) return { t: 'un', op: '!', x: this.unary() };
    if (this.accept('-')) return { t: 'un', op: '-', x: this.unary() };
    return this.member();
  }
  private args(): Node[] {
    const a: Node[] = [];
    if (this.accept(')')) return a;
    do a.push(this.expr()); while (this.accept(','));
    this.expect(')');
    return a;
  }
  private member(): Node {
    let n = this.primary();
    for (;;) {
      if (this.accept('.')) {
        const id = this.next();
        if (id.k !== 'id') throw new CelError(`expected field name after '.'`);
        if (this.accept('(')) n = { t: 'call', fn: id.v, target: n, args: this.args() };
        else n = { t: 'sel', obj: n, field: id.v };
      } else if (this.accept('[')) {
        const index = this.expr();
        this.expect(']');
        n = { t: 'idx', obj: n, index };
      } else return n;
    }
  }
  private primary(): Node {
    const t = this.next();
    if (t.k === 'num') return { t: 'lit', v: Number(t.v) };
    if (t.k === 'str') return { t: 'lit', v: t.v };
    if (t.k === 'id') {
      if (t.v === 'true') return { t: 'lit', v: true };
      if (t.v === 'false') return { t: 'lit', v: false };
      if (t.v === 'null') return { t: 'lit', v: null };
      if (this.accept('(')) return { t: 'call', fn: t.v, args: this.args() };
      return { t: 'id', name: t.v };
    }
    if (t.k === 'op' && t.v === '(') { const e = this.expr(); this.expect(')'); return e; }
    if (t.k === 'op' && t.v === '[') {
      const items: Node[] = [];
      if (!this.accept(']')) { do items.push(this.expr()); while (this.accept(',')); this.expect(']'); }
      return { t: 'list', items };
    }
    if (t.k === 'op' && t.v === '{') {
      const entries: [Node, Node][] = [];
      if (!this.accept('}')) {
        do { const k = this.expr(); this.expect(':'); entries.push([k, this.expr()]); } while (this.accept(','));
        this.expect('}');
      }
      return { t: 'map', entries };
    }
    throw new CelError(`unexpected '${t.v}'`);
  }
}

const GLOBAL_FNS = new Set(['has', 'size', 'int', 'string', 'double', 'bool']);
const METHODS = new Set(['size', 'startsWith', 'endsWith', 'contains', 'matches', 'all', 'exists', 'exists_one', 'map', 'filter']);
const MACROS = new Set(['all', 'exists', 'exists_one', 'map', 'filter']);

/** Checks at compile time that every function is one we implement and every identifier is bound. */
function check(n: Node, bound: ReadonlySet<string>): void {
  switch (n.t) {
    case 'lit': return;
    case 'id':
      if (!bound.has(n.name)) throw new CelError(`undeclared reference to '${n.name}'`);
      return;
    case 'sel': return check(n.obj, bound);
    case 'idx': check(n.obj, bound); return check(n.index, bound);
    case 'un': return check(n.x, bound);
    case 'bin': check(n.l, bound); return check(n.r, bound);
    case 'cond': check(n.c, bound); check(n.a, bound); return check(n.b, bound);
    case 'list': n.items.forEach((x) => check(x, bound)); return;
    case 'map': n.entries.forEach(([k, v]) => { check(k, bound); check(v, bound); }); return;
    case 'call': {
      if (n.target) {
        if (!METHODS.has(n.fn)) throw new CelError(`unsupported function '${n.fn}'`);
        check(n.target, bound);
        if (MACROS.has(n.fn)) {
          const v = n.args[0];
          if (!v || v.t !== 'id' || n.args.length !== 2) throw new CelError(`malformed macro '${n.fn}'`);
          check(n.args[1]!, new Set([...bound, v.name]));
          return;
        }
      } else {
        if (!GLOBAL_FNS.has(n.fn)) throw new CelError(`unsupported function '${n.fn}'`);
        if (n.fn === 'has') {
          if (n.args.length !== 1 || n.args[0]!.t !== 'sel') throw new CelError('invalid argument to has() macro');
        }
      }
      n.args.forEach((a) => check(a, bound));
      return;
    }
  }
}

function usesId(n: Node, name: string): boolean {
  switch (n.t) {
    case 'lit': return false;
    case 'id': return n.name === name;
    case 'sel': return usesId(n.obj, name);
    case 'idx': return usesId(n.obj, name) || usesId(n.index, name);
    case 'un': return usesId(n.x, name);
    case 'bin': return usesId(n.l, name) || usesId(n.r, name);
    case 'cond': return usesId(n.c, name) || usesId(n.a, name) || usesId(n.b, name);
    case 'list': return n.items.some((x) => usesId(x, name));
    case 'map': return n.entries.some(([k, v]) => usesId(k, name) || usesId(v, name));
    case 'call': return (n.target ? usesId(n.target, name) : false) || n.args.some((a) => usesId(a, name));
  }
}

/** Runtime failure of a rule (e.g. `no such key`): the rule counts as failed, as in CEL. */
class EvalError extends CelError {
  constructor(message: string) { super(message, false); }
}

type Env = Readonly<Record<string, unknown>>;

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function size(v: unknown): number {
  if (typeof v === 'string') return [...v].length;
  if (Array.isArray(v)) return v.length;
  if (isMap(v)) return Object.keys(v).length;
  throw new EvalError(`no matching overload for 'size'`);
}

function compare(a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  throw new EvalError('no matching overload for comparison');
}

function evalNode(n: Node, env: Env): unknown {
  switch (n.t) {
    case 'lit': return n.v;
    case 'id': return env[n.name];
    case 'sel': {
      const o = evalNode(n.obj, env);
      if (!isMap(o) || !Object.prototype.hasOwnProperty.call(o, n.field)) throw new EvalError(`no such key: ${n.field}`);
      return o[n.field];
    }
    case 'idx': {
      const o = evalNode(n.obj, env);
      const i = evalNode(n.index, env);
      if (Array.isArray(o) && typeof i === 'number') {
        if (i < 0 || i >= o.length) throw new EvalError(`index out of range: ${i}`);
        return o[i];
      }
      if (isMap(o) && typeof i === 'string') {
        if (!Object.prototype.hasOwnProperty.call(o, i)) throw new EvalError(`no such key: ${i}`);
        return o[i];
      }
      throw new EvalError('invalid index');
    }
    case 'un': {
      const x = evalNode(n.x, env);
      if (n.op === '!') { if (typeof x !== 'boolean') throw new EvalError("no matching overload for '!'"); return !x; }
      if (typeof x !== 'number') throw new EvalError("no matching overload for '-'");
      return -x;
    }
    case 'bin': return evalBin(n.op, n.l, n.r, env);
    case 'cond': {
      const c = evalNode(n.c, env);
      if (typeof c !== 'boolean') throw new EvalError('condition is not a bool');
      return c ? evalNode(n.a, env) : evalNode(n.b, env);
    }
    case 'list': return n.items.map((x) => evalNode(x, env));
    case 'map': return Object.fromEntries(n.entries.map(([k, v]) => [String(evalNode(k, env)), evalNode(v, env)]));
    case 'call': return evalCall(n, env);
  }
}

function evalBin(op: string, ln: Node, rn: Node, env: Env): unknown {
  if (op === '&&' || op === '||') {
    // CEL: errors are absorbed when the other side decides the result
    let l: unknown; let le: unknown;
    try { l = evalNode(ln, env); } catch (e) { le = e; }
    if (le === undefined && l === (op === '||')) return l;
    const r = evalNode(rn, env);
    if (r === (op === '||')) return r;
    if (le !== undefined) throw le;
    if (typeof l !== 'boolean' || typeof r !== 'boolean') throw new EvalError(`no matching overload for '${op}'`);
    return op === '&&' ? l && r : l || r;
  }
  const l = evalNode(ln, env);
  const r = evalNode(rn, env);
  switch (op) {
    case '==': return isDeepStrictEqual(l, r);
    case '!=': return !isDeepStrictEqual(l, r);
    case '<': return compare(l, r) < 0;
    case '<=': return compare(l, r) <= 0;
    case '>': return compare(l, r) > 0;
    case '>=': return compare(l, r) >= 0;
    case 'in':
      if (Array.isArray(r)) return r.some((x) => isDeepStrictEqual(x, l));
      if (isMap(r)) return typeof l === 'string' && Object.prototype.hasOwnProperty.call(r, l);
      throw new EvalError("no matching overload for 'in'");
    case '+':
      if (typeof l === 'number' && typeof r === 'number') return l + r;
      if (typeof l === 'string' && typeof r === 'string') return l + r;
      if (Array.isArray(l) && Array.isArray(r)) return [...l, ...r];
      throw new EvalError("no matching overload for '+'");
    default: {
      if (typeof l !== 'number' || typeof r !== 'number') throw new EvalError(`no matching overload for '${op}'`);
      if ((op === '/' || op === '%') && r === 0) throw new EvalError('division by zero');
      if (op === '-') return l - r;
      if (op === '*') return l * r;
      if (op === '/') return Number.isInteger(l) && Number.isInteger(r) ? Math.trunc(l / r) : l / r;
      return l % r;
    }
  }
}

function evalCall(n: Extract<Node, { t: 'call' }>, env: Env): unknown {
  if (!n.target) {
    if (n.fn === 'has') {
      const sel = n.args[0] as Extract<Node, { t: 'sel' }>;
      const o = evalNode(sel.obj, env);
      return isMap(o) && Object.prototype.hasOwnProperty.call(o, sel.field);
    }
    const a = n.args.map((x) => evalNode(x, env));
    switch (n.fn) {
      case 'size': return size(a[0]);
      case 'int': {
        const x = Number(a[0]);
        if (!Number.isFinite(x)) throw new EvalError('cannot convert to int');
        return Math.trunc(x);
      }
      case 'double': return Number(a[0]);
      case 'string': return typeof a[0] === 'string' ? a[0] : JSON.stringify(a[0]);
      case 'bool': return a[0] === true || a[0] === 'true';
    }
    throw new EvalError(`unknown function ${n.fn}`);
  }
  const target = evalNode(n.target, env);
  if (MACROS.has(n.fn)) {
    const v = (n.args[0] as Extract<Node, { t: 'id' }>).name;
    const body = n.args[1]!;
    const elems = Array.isArray(target) ? target : isMap(target) ? Object.keys(target) : null;
    if (!elems) throw new EvalError(`no matching overload for '${n.fn}'`);
    const run = (x: unknown) => evalNode(body, { ...env, [v]: x });
    switch (n.fn) {
      case 'all': return elems.every((x) => run(x) === true);
      case 'exists': return elems.some((x) => run(x) === true);
      case 'exists_one': return elems.filter((x) => run(x) === true).length === 1;
      case 'map': return elems.map(run);
      case 'filter': return elems.filter((x) => run(x) === true);
    }
  }
  const a = n.args.map((x) => evalNode(x, env));
  switch (n.fn) {
    case 'size': return size(target);
    case 'startsWith': case 'endsWith': case 'contains': case 'matches': {
      if (typeof target !== 'string' || typeof a[0] !== 'string') throw new EvalError(`no matching overload for '${n.fn}'`);
      if (n.fn === 'startsWith') return target.startsWith(a[0]);
      if (n.fn === 'endsWith') return target.endsWith(a[0]);
      if (n.fn === 'contains') return target.includes(a[0]);
      return new RegExp(a[0], 'u').test(target);
    }
  }
  throw new EvalError(`unknown method ${n.fn}`);
}

export interface CelProgram {
  readonly usesOldSelf: boolean;
  evaluate(vars: { self: unknown; oldSelf?: unknown }): unknown;
}

export function compileCel(rule: string): CelProgram {
  const ast = new Parser(lex(rule)).parseAll();
  check(ast, new Set(['self', 'oldSelf']));
  return {
    usesOldSelf: usesId(ast, 'oldSelf'),
    evaluate: (vars) => evalNode(ast, { self: vars.self, oldSelf: vars.oldSelf }),
  };
}
