/**
 * Structural-schema processing of custom resources (schema.ts) as apiextensions-apiserver does it:
 * null handling, defaulting, pruning, value validation and CEL, with upstream-shaped messages.
 */
import { describe, expect, it } from 'vitest';
import { processCustomResource, type Schema } from '../support/apiserver/schema.js';
import { fieldErrorString } from '../support/apiserver/status.js';

const root = (spec: Schema, extra: Record<string, Schema> = {}): Schema => ({ type: 'object', properties: { spec, ...extra } });
function run(schema: Schema, obj: Record<string, any>, old?: Record<string, any>) {
  const o = structuredClone(obj);
  const r = processCustomResource(o, schema, old, false);
  return { obj: o, errors: r.errors.map(fieldErrorString), pruned: r.pruned, warnings: r.celWarnings };
}

describe('nullable, defaults and pruning', () => {
  const schema = root({
    type: 'object',
    properties: {
      a: { type: 'string', default: 'dflt' },
      b: { type: 'string' },
      c: { type: 'string', nullable: true },
      d: { type: 'string', nullable: true, default: 'x' },
      list: { type: 'array', items: { type: 'object', properties: { n: { type: 'integer', default: 7 }, m: { type: 'string' } } } },
      nested: { type: 'object', default: {}, properties: { inner: { type: 'boolean', default: true } } },
      labels: { type: 'object', additionalProperties: { type: 'string', maxLength: 3 } },
    },
  });

  it('drops nulls of non-nullable fields, defaults them when a default exists, keeps nullable nulls', () => {
    const r = run(schema, { apiVersion: 'x/v1', kind: 'K', metadata: { name: 'n', anything: 1 }, spec: { a: null, b: null, c: null, d: null } });
    expect(r.obj.spec).toEqual({ a: 'dflt', c: null, d: null, nested: { inner: true } });
    expect(r.obj.metadata).toEqual({ name: 'n', anything: 1 }); // metadata is not the schema's business here
    expect(r.errors).toEqual([]);
  });

  it('defaults inside list items and defaulted objects, and prunes unknown fields with their paths', () => {
    const r = run(schema, { spec: { list: [{ m: 'x', junk: 1 }, {}], extra: { deep: 1 }, labels: { ok: 'abc' } }, top: 1 });
    expect(r.obj).toEqual({ spec: { a: 'dflt', d: 'x', list: [{ m: 'x', n: 7 }, { n: 7 }], nested: { inner: true }, labels: { ok: 'abc' } } });
    expect(r.pruned.sort()).toEqual(['spec.extra', 'spec.list[0].junk', 'top']);
  });

  it('validates additionalProperties values', () => {
    expect(run(schema, { spec: { labels: { k: 'toolong' } } }).errors).toEqual(['spec.labels.k: Too long: may not be more than 3 bytes']);
  });
});

describe('value validation', () => {
  const schema = root({
    type: 'object',
    required: ['name'],
    properties: {
      name: { type: 'string', minLength: 2, pattern: '^[a-z]+$' },
      port: { 'x-kubernetes-int-or-string': true },
      ratio: { type: 'number', minimum: 0, maximum: 1, exclusiveMaximum: true },
      when: { type: 'string', format: 'date-time' },
      items: { type: 'array', maxItems: 2, items: { type: 'integer' } },
      conds: {
        type: 'array', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'],
        items: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, status: { type: 'string' } } },
      },
      storage: {
        type: 'object',
        oneOf: [{ required: ['pvc'] }, { required: ['local'] }],
        properties: { pvc: { type: 'object' }, local: { type: 'object' } },
      },
      mode: { type: 'string', anyOf: [{ enum: ['A'] }, { enum: ['B'] }] },
    },
  });

  it('accepts a valid object', () => {
    expect(run(schema, { spec: { name: 'ok', port: 'http', ratio: 0.5, when: '2026-01-01T00:00:00Z', items: [1], storage: { pvc: {} }, mode: 'B',
      conds: [{ type: 'Ready' }, { type: 'Other' }] } }).errors).toEqual([]);
    expect(run(schema, { spec: { name: 'ok', port: 8080 } }).errors).toEqual([]);
  });

  it('reports every violation with the real server\'s wording', () => {
    const r = run(schema, { spec: { name: 'A', port: true, ratio: 1, when: 'tomorrow', items: [1, 2.5, 3], storage: { pvc: {}, local: {} }, mode: 'C',
      conds: [{ type: 'Ready' }, { type: 'Ready', status: 'x' }] } });
    expect(r.errors).toEqual([
      'spec.name: Invalid value: "A": spec.name in body should be at least 2 chars long',
      'spec.name: Invalid value: "A": spec.name in body should match \'^[a-z]+$\'',
      'spec.port: Invalid value: true: spec.port in body must be of type integer,string: "boolean"',
      'spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1',
      'spec.when: Invalid value: "tomorrow": spec.when in body must be of type date-time: "tomorrow"',
      'spec.items: Too many: 3: must have at most 2 items',
      'spec.items[1]: Invalid value: 2.5: spec.items[1] in body must be of type integer: "number"',
      'spec.storage: Invalid value: "object": spec.storage in body must validate one and only one schema (oneOf)',
      'spec.mode: Invalid value: "C": spec.mode in body must validate at least one schema (anyOf)',
      'spec.conds[1]: Duplicate value: "Ready"',
    ]);
    expect(run(schema, { spec: {} }).errors).toEqual(['spec.name: Required value']);
  });
});

describe('x-kubernetes-validations', () => {
  const schema = root({
    type: 'object',
    'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'spec is immutable' }],
    properties: { a: { type: 'string' } },
  }, {
    status: {
      type: 'object',
      properties: {
        conds: {
          type: 'array', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'],
          items: {
            type: 'object',
            'x-kubernetes-validations': [
              { rule: 'self.status != oldSelf.status || self.reason == oldSelf.reason', message: 'reason changes need a status change', fieldPath: '.reason' },
              { rule: "self.reason.size() > 0", reason: 'FieldValueRequired', message: 'reason must not be empty' },
            ],
            properties: { type: { type: 'string' }, status: { type: 'string' }, reason: { type: 'string' } },
          },
        },
      },
    },
  });

  it('runs transition rules only on update, correlating list-map items by key', () => {
    expect(run(schema, { spec: { a: 'x' } }).errors).toEqual([]);
    expect(run(schema, { spec: { a: 'y' } }, { spec: { a: 'x' } }).errors).toEqual(['spec: Invalid value: "object": spec is immutable']);
    const old = { spec: {}, status: { conds: [{ type: 'A', status: 'True', reason: 'R1' }] } };
    const moved = { spec: {}, status: { conds: [{ type: 'B', status: 'True', reason: 'Z' }, { type: 'A', status: 'True', reason: 'R2' }] } };
    expect(run(schema, moved, old).errors).toEqual(['status.conds[1].reason: Invalid value: "object": reason changes need a status change']);
    expect(run(schema, { spec: {}, status: { conds: [{ type: 'A', status: 'True', reason: '' }] } }).errors)
      .toEqual(['status.conds[0]: Required value: reason must not be empty']);
  });

  it('skips and reports rules it cannot evaluate instead of failing writes', () => {
    const s: Schema = root({ type: 'object', 'x-kubernetes-validations': [{ rule: 'self.a.lowerAscii() == self.a' }], properties: { a: { type: 'string' } } });
    const r = run(s, { spec: { a: 'X' } });
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([{ path: 'spec', rule: 'self.a.lowerAscii() == self.a', reason: "unsupported function 'lowerAscii'" }]);
  });
});
