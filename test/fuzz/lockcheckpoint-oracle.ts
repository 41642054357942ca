/**
 * The oracle of the LockCheckpoint fuzz: what must hold for any object the API server could hand
 * the controller (see test/fuzz/lockcheckpoint.test.ts for the list). `runScenario` is pure (no
 * I/O besides reading the CRD once), so the same checks can run on objects read back from a real
 * API server.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import YAML from 'yaml';
import {
  LockCheckpointError, parseLockCheckpoint, validateSpec, validateStatus, type LockCheckpointStatus,
} from '../../src/api/lockcheckpoint.js';
import { DEFAULT_CONFIG, reconcile, type RawCheckpoint, type ReconcileResult } from '../../src/controller/reconcile.js';
import { processCustomResource, validateTree, type Schema, type SchemaError } from './crd-schema.js';
import { REPO_ROOT } from '../helpers/env.js';
import type { Scenario } from './lockcheckpoint-gen.js';

const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout fires a longer delay after 1 ms (TimeoutOverflowWarning)

const crd = YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml'), 'utf8'));
export const SCHEMA = crd.spec.versions.find((v: { name: string }) => v.name === 'v1alpha1').schema.openAPIV3Schema as Schema;
const STATUS_SCHEMA = SCHEMA.properties!.status!;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatch(target: unknown, patch: Obj): Obj {
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (isObj(v)) out[k] = mergePatch(out[k], v);
    else out[k] = structuredClone(v);
  }
  return out;
}

function isDeepFrozen(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return true;
  return Object.isFrozen(v) && Object.values(v).every(isDeepFrozen);
}

function checkFieldErrors(errs: unknown, base: string, what: string, v: string[]): void {
  if (!Array.isArray(errs)) { v.push(`${what} did not return a list`); return; }
  for (const e of errs as { field?: unknown; message?: unknown }[]) {
    if (typeof e.field !== 'string' || !e.field.startsWith(base) || typeof e.message !== 'string' || e.message === '') {
      v.push(`${what} returned a malformed error ${JSON.stringify(e).slice(0, 200)}`);
      return;
    }
  }
}

/** What reconcile returned, checked on its own. */
function checkResult(r: ReconcileResult, agentWasInvalid: boolean, v: string[]): void {
  // status.agent belongs to the agent: the controller never writes it, so an invalid one (a hand
  // edit) is echoed in the status it wants and ignored (with an InvalidAgentReport event)
  const se = validateStatus(r.status).filter((e) => !(e.field.startsWith('status.agent') && agentWasInvalid));
  if (se.length) v.push(`reconcile wants a status that fails validateStatus: ${se.map((e) => `${e.field}: ${e.message}`).join('; ').slice(0, 300)}`);
  if (r.statusPatch) {
    const json = JSON.parse(JSON.stringify(r.statusPatch)) as Obj;
    if (!isDeepStrictEqual(json, r.statusPatch)) v.push('status patch does not survive JSON (undefined, NaN, Infinity or a Date inside)');
    for (const [k, val] of Object.entries(json)) {
      if (val === null) continue;
      const errs: SchemaError[] = [];
      const sub = STATUS_SCHEMA.properties?.[k];
      if (!sub) { v.push(`status patch writes status.${k}, which the CRD does not have (the server prunes it)`); continue; }
      validateTree(val, sub, `status.${k}`, errs);
      if (errs.length) v.push(`the API server would refuse the status write: ${errs.map((e) => `${e.field}: ${e.detail}`).join('; ').slice(0, 300)}`);
    }
  }
  const q = r.requeueAfterMs;
  if (q !== undefined && (!Number.isFinite(q) || q < 0 || q > MAX_TIMER_MS)) {
    v.push(`requeueAfterMs ${q} is not a delay a Node.js timer honours (0…${MAX_TIMER_MS}): it fires after 1 ms, every time`);
  }
  for (const e of r.events) {
    if ((e.type !== 'Normal' && e.type !== 'Warning') || !/^[A-Z][A-Za-z0-9]*$/.test(e.reason) || typeof e.message !== 'string') {
      v.push(`malformed event ${JSON.stringify(e).slice(0, 200)}`);
    }
  }
}

export interface ScenarioResult { violations: string[]; passes: number; invalidSpecChecked: boolean; finalPhase?: string; finalReason?: string; schemaValid: boolean; ms: number }

export function runScenario(s: Scenario): ScenarioResult {
  const t0 = performance.now();
  const v: string[] = [];
  const raw = structuredClone(s.object);
  const rawJson = JSON.stringify(raw);

  // the CRD's schema, as the API server applies it
  const stored = structuredClone(s.object) as Obj;
  const sr = processCustomResource(stored, SCHEMA);
  const schemaValid = sr.errors.length === 0;
  const specErrs = sr.errors.filter((e) => e.field.startsWith('spec'));
  if (s.specKind !== 'invalid' && specErrs.length) v.push(`generator: a ${s.specKind} spec fails the CRD schema: ${specErrs.map((e) => `${e.field}: ${e.detail}`).join('; ').slice(0, 300)}`);
  const seen = (schemaValid ? stored : raw) as RawCheckpoint & Obj;

  // parse / validate
  try {
    const p = parseLockCheckpoint(raw);
    if (validateSpec(p.spec).length || validateStatus(p.status).length) v.push('parseLockCheckpoint returned an object that does not validate');
    if (!isDeepFrozen(p)) v.push('parseLockCheckpoint returned an object that is not deeply frozen');
  } catch (err) {
    if (!(err instanceof LockCheckpointError)) v.push(`parseLockCheckpoint threw ${(err as Error).name}: ${(err as Error).message}`);
    else if (err.errors.length === 0) v.push('LockCheckpointError without field errors');
  }
  for (const [what, f] of [['validateSpec', () => validateSpec(raw.spec)], ['validateStatus', () => validateStatus(raw.status)]] as const) {
    try { checkFieldErrors(f(), what === 'validateSpec' ? 'spec' : 'status', what, v); } catch (err) { v.push(`${what} threw ${(err as Error).name}: ${(err as Error).message}`); }
  }
  if (JSON.stringify(raw) !== rawJson) v.push('parse/validate mutated their input');

  // reconcile, pass after pass
  let cur = structuredClone(seen) as Obj;
  let t = s.now.getTime();
  let writesInARow = 0;
  let idleZero = 0;
  let passes = 0;
  let first: ReconcileResult | undefined;
  let last: ReconcileResult | undefined;
  const deleting = isObj(cur.metadata) && cur.metadata.deletionTimestamp !== undefined;
  for (; passes < 40; passes++) {
    let r: ReconcileResult;
    try {
      r = reconcile(cur as RawCheckpoint, s.pod as never, new Date(t), DEFAULT_CONFIG, undefined, s.sourceNode);
    } catch (err) {
      v.push(`reconcile threw (pass ${passes}) ${(err as Error).name}: ${(err as Error).message}\n${(err as Error).stack?.split('\n').slice(1, 4).join('\n')}`);
      break;
    }
    first ??= r;
    last = r;
    checkResult(r, validateStatus(cur.status).some((e) => e.field.startsWith('status.agent')), v);
    if (v.length) break;
    const md = { ...(cur.metadata as Obj) };
    let wrote = false;
    if (r.labels) {
      const labels = { ...((md.labels as Obj) ?? {}), ...r.labels };
      if (!isDeepStrictEqual(labels, md.labels)) { md.labels = labels; wrote = true; }
    }
    const fins = (md.finalizers as string[] | undefined) ?? [];
    if (r.finalizer === 'add' && !fins.includes('lockmig.dev/images')) { md.finalizers = [...fins, 'lockmig.dev/images']; wrote = true; }
    if (r.finalizer === 'remove' && fins.includes('lockmig.dev/images')) {
      md.finalizers = fins.filter((f) => f !== 'lockmig.dev/images');
      wrote = true;
      if ((md.finalizers as string[]).length === 0 && md.deletionTimestamp !== undefined) break; // the object is gone
    }
    cur = { ...cur, metadata: md };
    if (r.statusPatch && r.finalizer !== 'remove') {
      cur.status = mergePatch(cur.status, r.statusPatch as Obj);
      wrote = true;
    }
    if (r.delete) break;
    if (wrote) {
      // the write comes back as a watch event at once: the next pass is at the same time
      if (++writesInARow > 4) { v.push(`write loop: ${writesInARow} writes in a row without converging (last patch ${JSON.stringify(r.statusPatch ?? r.labels ?? r.finalizer).slice(0, 300)})`); break; }
      continue;
    }
    writesInARow = 0;
    if (r.requeueAfterMs === undefined) break; // waits for events
    if (r.requeueAfterMs < 1) {
      if (++idleZero >= 3) { v.push('hot loop: requeueAfterMs 0 pass after pass with no change'); break; }
    } else idleZero = 0;
    t += r.requeueAfterMs;
  }

  // invalid specs end Failed/InvalidSpec
  const prevStatus = (isObj(seen.status) ? seen.status : {}) as LockCheckpointStatus;
  const wasFailed = prevStatus.phase === 'Failed' && validateStatus(prevStatus).every((e) => !e.field.startsWith('status.phase'));
  const invalidSpecChecked = first !== undefined && !deleting && validateSpec(seen.spec).length > 0 && !wasFailed;
  if (first && invalidSpecChecked) {
    const ready = first.status.conditions?.find((c) => c.type === 'Ready');
    if (first.status.phase !== 'Failed' || ready?.reason !== 'InvalidSpec' || ready.status !== 'False') {
      v.push(`invalid spec did not end Failed/InvalidSpec: phase ${first.status.phase}, Ready ${ready?.status}/${ready?.reason}`);
    }
  }
  const fin = last?.status.conditions?.find((c) => c.type === 'Ready');
  return { violations: v, passes, invalidSpecChecked, finalPhase: last?.status.phase, finalReason: fin?.reason, schemaValid, ms: performance.now() - t0 };
}

