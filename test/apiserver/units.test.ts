/**
 * The pure pieces of the fake API server against their specifications: RFC 7386 and RFC 6902 examples,
 * label selector grammar, and the CEL subset (including CEL's error absorption in && and ||).
 */
import { describe, expect, it } from 'vitest';
import { jsonPatch, mergePatch, strategicMergePatch, PatchError } from '../support/apiserver/patch.js';
import { matchLabels, parseLabelSelector } from '../support/apiserver/selectors.js';
import { compileCel, CelError } from '../support/apiserver/cel.js';
import { ApiStatusError } from '../support/apiserver/status.js';

describe('RFC 7386 merge patch (appendix A)', () => {
  const cases: [unknown, unknown, unknown][] = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  it.each(cases)('%j + %j', (target, patch, want) => {
    expect(mergePatch(target as never, patch as never)).toEqual(want);
  });
});

describe('RFC 6902 JSON patch (appendix A)', () => {
  it('adds, removes, replaces, moves, copies and tests', () => {
    expect(jsonPatch({ foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux' }])).toEqual({ foo: 'bar', baz: 'qux' });
    expect(jsonPatch({ foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }])).toEqual({ foo: ['bar', 'qux', 'baz'] });
    expect(jsonPatch({ foo: ['bar'] }, [{ op: 'add', path: '/foo/-', value: ['abc'] }])).toEqual({ foo: ['bar', ['abc']] });
    expect(jsonPatch({ baz: 'qux', foo: 'bar' }, [{ op: 'remove', path: '/baz' }])).toEqual({ foo: 'bar' });
    expect(jsonPatch({ foo: { bar: 'baz', waldo: 'fred' }, qux: { corge: 'grault' } },
      [{ op: 'move', from: '/foo/waldo', path: '/qux/thud' }])).toEqual({ foo: { bar: 'baz' }, qux: { corge: 'grault', thud: 'fred' } });
    expect(jsonPatch({ foo: ['all', 'grass', 'cows', 'eat'] }, [{ op: 'move', from: '/foo/1', path: '/foo/3' }]))
      .toEqual({ foo: ['all', 'cows', 'eat', 'grass'] });
    expect(jsonPatch({ '/': 9, '~1': 10 }, [{ op: 'test', path: '/~01', value: 10 }, { op: 'copy', from: '/~1', path: '/c' }]))
      .toEqual({ '/': 9, '~1': 10, c: 9 });
  });
  it('fails a test op, a missing target and a bad index without touching the input', () => {
    const doc = { baz: 'qux', foo: ['a', 2, 'c'] };
    expect(() => jsonPatch(doc, [{ op: 'test', path: '/baz', value: 'bar' }])).toThrow(PatchError);
    expect(() => jsonPatch(doc, [{ op: 'add', path: '/nope/bat', value: 'qux' }])).toThrow(/missing path/);
    expect(() => jsonPatch(doc, [{ op: 'add', path: '/baz/bat', value: 'qux' }])).toThrow(/scalar/);
    expect(() => jsonPatch(doc, [{ op: 'add', path: '/foo/5', value: 1 }])).toThrow(/out of bounds/);
    expect(() => jsonPatch(doc, [{ op: 'frobnicate', path: '/baz' }])).toThrow(/Unexpected kind/);
    expect(doc).toEqual({ baz: 'qux', foo: ['a', 2, 'c'] });
  });
});

describe('strategic merge patch', () => {
  it('merges finalizers as a set, replaces lists without a merge key, and honours $patch: replace', () => {
    const cur = { metadata: { finalizers: ['a'] }, spec: { args: ['x', 'y'], volumes: [{ name: 'v', emptyDir: {} }] } };
    expect(strategicMergePatch(cur, { metadata: { finalizers: ['b', 'a'] }, spec: { args: ['z'] } }))
      .toEqual({ metadata: { finalizers: ['a', 'b'] }, spec: { args: ['z'], volumes: [{ name: 'v', emptyDir: {} }] } });
    expect(strategicMergePatch(cur, { spec: { volumes: [{ name: 'w', hostPath: { path: '/x' } }, { $patch: 'replace' }] } }))
      .toEqual({ metadata: { finalizers: ['a'] }, spec: { args: ['x', 'y'], volumes: [{ name: 'w', hostPath: { path: '/x' } }] } });
    expect(strategicMergePatch(cur, { $deleteFromPrimitiveList: undefined, metadata: { '$deleteFromPrimitiveList/finalizers': ['a'] } } as never))
      .toMatchObject({ metadata: { finalizers: [] } });
  });
});

describe('label selectors', () => {
  const labels = { app: 'db', tier: 'backend', n: '5' };
  it.each([
    ['app=db', true], ['app==db', true], ['app!=db', false], ['app!=web', true], ['missing!=x', true],
    ['app in (web, db)', true], ['app notin (db)', false], ['tier', true], ['!tier', false], ['!missing', true],
    ['app=db,tier=frontend', false], ['n>4', true], ['n<5', false], ['', true],
  ])('%s → %s', (sel, want) => {
    expect(matchLabels(parseLabelSelector(sel), labels)).toBe(want);
  });
  it('rejects malformed selectors with 400', () => {
    for (const bad of ['app in db', '=x', 'Bad Key=1', 'a=(b', 'a=b c']) {
      expect(() => parseLabelSelector(bad), bad).toThrow(ApiStatusError);
    }
  });
});

describe('CEL subset', () => {
  const run = (rule: string, self: unknown, oldSelf?: unknown) => compileCel(rule).evaluate({ self, oldSelf });
  it('evaluates the rules CRDs commonly use', () => {
    expect(run('self == oldSelf', { a: [1, { b: 'c' }] }, { a: [1, { b: 'c' }] })).toBe(true);
    expect(run('self == oldSelf', { a: 1 }, { a: 2 })).toBe(false);
    expect(run('has(self.a) != has(self.b)', { a: {} })).toBe(true);
    expect(run('has(self.a) != has(self.b)', { a: {}, b: {} })).toBe(false);
    expect(run("self.all(k, k in ['POSIX', 'OFD'])", ['OFD'])).toBe(true);
    expect(run('size(self) <= 2 && self.size() >= 1', 'ab')).toBe(true);
    expect(run("self.startsWith('/var/') ? !self.contains('..') : false", '/var/x/../y')).toBe(false);
    expect(run("self.exists_one(c, c.type == 'Ready')", [{ type: 'Ready' }, { type: 'X' }])).toBe(true);
    expect(run("self.matches('^[a-z]+$')", 'abc')).toBe(true);
    expect(run('self.x + 1 > 2 || self.y', { x: 1, y: true })).toBe(true);
    expect(run('!has(self.ttl) || self.ttl >= 0', {})).toBe(true);
    expect(compileCel('self.a == oldSelf.a').usesOldSelf).toBe(true);
  });
  it('absorbs errors in || and && as CEL does, and raises them otherwise', () => {
    expect(run('self.missing == 1 || true', {})).toBe(true);
    expect(run('false && self.missing == 1', {})).toBe(false);
    expect(() => run('self.missing == 1', {})).toThrow(/no such key: missing/);
  });
  it('refuses to compile what it does not implement (so the server can skip and warn)', () => {
    for (const rule of ['self.lowerAscii() == self', 'quantity(self).isLessThan(quantity("1"))', 'self.x.?y', 'isURL(self)']) {
      let err: unknown;
      try { compileCel(rule); } catch (e) { err = e; }
      expect(err, rule).toBeInstanceOf(CelError);
      expect((err as CelError).unsupported).toBe(true);
    }
  });
});
