/**
 * Generator of LockCheckpoint objects, their source pods and the controller's clock, for the
 * pure-layer fuzz (test/fuzz/lockcheckpoint.test.ts) and, later, for fuzzing through a real
 * kube-apiserver: every object is plain JSON (what `kubectl create -f` or a status PUT would
 * send), built from (seed, index) alone.
 *
 * Kinds of spec (`SpecKind`):
 *   valid    within every rule of the CRD, ordinary values
 *   absurd   still within every rule of the CRD (a real API server accepts it), but at the edges:
 *            253-character names, 64 containers of 63 characters, 512-character unicode storage
 *            paths with "..x" segments, every limit at its minimum and maximum, a year of TTL
 *   invalid  what only a server without the CRD's schema (or an older one) would store: wrong
 *            types, nulls, unknown fields, out-of-range and fractional numbers, path escapes, NUL,
 *            duplicates, huge lists and strings, non-DNS unicode names, a spec that is not an object
 * Kinds of status (`StatusKind`):
 *   none | controller (a state the controller and agent could have written, at any phase, with
 *   timestamps in the past, the future, the epoch or year 9999) | hand-edited (schema-valid but
 *   inconsistent: foreign conditions, mismatched agent reports, maximal counts and messages) |
 *   garbage (wrong types anywhere).
 */
import { Rng } from './rng.js';

export type SpecKind = 'valid' | 'absurd' | 'invalid';
export type StatusKind = 'none' | 'controller' | 'hand-edited' | 'garbage';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

export interface PodLike {
  metadata?: { uid?: string; name?: string; deletionTimestamp?: string };
  spec?: { nodeName?: string; containers?: { name: string }[]; initContainers?: { name: string }[] };
  status?: { phase?: string };
}

export interface Scenario {
  readonly index: number;
  readonly specKind: SpecKind;
  readonly statusKind: StatusKind;
  /** the object as a client would create it (status included, as a status update would write it) */
  readonly object: Obj;
  readonly pod: PodLike | undefined;
  /** what the controller knows of the node a kubelet checkpoint source names */
  readonly sourceNode?: { readonly exists: boolean };
  /** the controller's clock for this pass */
  readonly now: Date;
  readonly notes: readonly string[];
}

const T0 = Date.parse('2026-01-01T00:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const DNS_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';
const UNICODE = ['ü', 'é', 'ß', '漢', '字', '🔒', 'Ω', '\u200b', 'İ', 'ﬁ'];

function label(rng: Rng, max = 63): string {
  const n = max <= 12 ? rng.int(1, max) : rng.weighted([[6, rng.int(1, 12)], [2, rng.int(13, max)], [1, max]] as const);
  let s = '';
  for (let i = 0; i < n; i++) {
    const edge = i === 0 || i === n - 1;
    s += !edge && rng.chance(0.1) ? '-' : DNS_CHARS[rng.int(0, DNS_CHARS.length - 1)];
  }
  return s;
}

function subdomain(rng: Rng, max = 253): string {
  if (rng.chance(0.1)) {
    // exactly max characters: labels of 63 joined by dots
    let s = label(rng, 63);
    while (s.length + 2 <= max) s += `.${label(rng, Math.min(63, max - s.length - 1))}`;
    return s.slice(0, max).replace(/[.-]+$/, '') || 'a';
  }
  const parts = Array.from({ length: rng.int(1, 3) }, () => label(rng, 20));
  return parts.join('.');
}

function uid(rng: Rng): string {
  const h = (n: number) => Array.from({ length: n }, () => '0123456789abcdefABCDEF'[rng.int(0, 21)]).join('');
  return `${h(8)}-${h(4)}-${h(4)}-${h(4)}-${h(12)}`;
}

function relPath(rng: Rng, absurd: boolean): string {
  const seg = (): string => {
    const kind = rng.weighted([[5, 'plain'], [absurd ? 2 : 0, 'dotdotx'], [absurd ? 2 : 0, 'dotx'], [absurd ? 2 : 0, 'unicode'], [absurd ? 1 : 0, 'long']] as const);
    switch (kind) {
      case 'plain': return label(rng, 20);
      case 'dotdotx': return `..${label(rng, 8)}`;
      case 'dotx': return `.${label(rng, 8)}`;
      case 'unicode': return Array.from({ length: rng.int(1, 8) }, () => rng.pick(UNICODE)).join('');
      case 'long': return 'x'.repeat(rng.int(100, 255));
    }
  };
  let p = Array.from({ length: rng.int(1, absurd ? 12 : 3) }, seg).join('/');
  if ([...p].length > 512) p = [...p].slice(0, 512).join('').replace(/\/+$/, '');
  if (p.endsWith('/') || p === '') p = 'x';
  // a cut can end a segment in "." or "..", which the pattern refuses: repair the tail
  return p.split('/').map((s) => (s === '.' || s === '..' || s === '' ? 'x' : s)).join('/');
}

// ---- spec

function validSpec(rng: Rng, absurd: boolean): Obj {
  const spec: Obj = { sourcePodName: absurd && rng.chance(0.5) ? subdomain(rng, 253) : subdomain(rng, 40) };
  if (rng.chance(0.3)) spec.sourcePodUID = uid(rng);
  if (rng.chance(0.4)) {
    const n = absurd ? rng.pick([1, 63, 64]) : rng.int(0, 3);
    const names = new Set<string>();
    while (names.size < n) names.add(absurd ? label(rng, 63) : rng.pick(['db', 'app', 'sidecar', 'worker', 'cache']));
    spec.containers = [...names];
  }
  if (rng.chance(0.4)) spec.lockKinds = rng.shuffle(['POSIX', 'FLOCK', 'OFD', 'LEASE']).slice(0, rng.int(1, 4));
  if (rng.chance(0.6)) {
    spec.storage = rng.chance(0.5)
      ? { nodeLocal: rng.chance(0.7) ? { path: relPath(rng, absurd) } : {} }
      : { persistentVolumeClaim: { claimName: subdomain(rng, absurd ? 253 : 30), ...(rng.chance(0.6) ? { subPath: relPath(rng, absurd) } : {}) } };
  }
  if (rng.chance(0.5)) {
    const r: Obj = {};
    if (rng.chance(0.7)) r.mode = rng.pick(['Auto', 'Handover', 'Retake']);
    if (rng.chance(0.6)) r.timeoutSeconds = absurd ? rng.pick([1, 3600]) : rng.int(1, 120);
    if (rng.chance(0.6)) r.holdSeconds = absurd ? rng.pick([0, 86400]) : rng.int(0, 600);
    spec.restore = r;
  }
  if (rng.chance(0.4)) spec.ttlSecondsAfterFinished = absurd ? rng.pick([0, 1, 2_147_483, 2_147_484, 2_592_000, 31_536_000]) : rng.int(0, 3600);
  if (rng.chance(0.2)) toArchiveSource(rng, spec, absurd);
  return spec;
}

/** File names the kubelet (or a user) could give a checkpoint archive: one plain name each. */
function archiveName(rng: Rng, absurd: boolean): string {
  if (absurd) return rng.pick(['x'.repeat(255), 'é'.repeat(127), '..x', '.a', 'a:b+c=d,e@f%g~h', `checkpoint-${label(rng, 63)}_${label(rng, 63)}-${label(rng, 63)}-2026-12-05T07:00:00Z.tar`]);
  return `checkpoint-${label(rng, 12)}_${label(rng, 12)}-${rng.pick(['db', 'app'])}-2026-12-05T07:${String(rng.int(0, 59)).padStart(2, '0')}:00Z.tar${rng.pick(['', '.gz', '.zst'])}`;
}

/** A kubelet checkpoint archive as the source instead of the pod (spec.source), and only what goes with it. */
function toArchiveSource(rng: Rng, spec: Obj, absurd: boolean): void {
  delete spec.sourcePodName;
  delete spec.sourcePodUID;
  spec.source = { kubeletCheckpoint: { node: absurd && rng.chance(0.5) ? subdomain(rng, 253) : subdomain(rng, 30), file: archiveName(rng, absurd) } };
  if (Array.isArray(spec.containers)) spec.containers = spec.containers.slice(0, 1);
  const st = spec.storage as Obj | undefined;
  if (st && st.persistentVolumeClaim) spec.storage = rng.chance(0.5) ? { nodeLocal: {} } : { api: {} };
  const r = spec.restore as Obj | undefined;
  if (r && r.mode === 'Handover') r.mode = rng.pick(['Auto', 'Retake']);
}

const WRONG: readonly (() => Json)[] = [
  () => null, () => true, () => -1, () => 1.5, () => 1e300, () => 2 ** 53 + 2, () => '', () => '\0', () => 'x'.repeat(100_000),
  () => [], () => ({}), () => [null], () => '漢字🔒', () => 'UPPER', () => '-leading', () => '../../etc', () => '/abs', () => 'a//b',
  () => 'a/./b', () => 'a\\b', () => '..', () => Array.from({ length: 2_000 }, (_, i) => `c${i}`), () => ({ nodeLocal: {}, persistentVolumeClaim: { claimName: 'x' } }),
];

function invalidSpec(rng: Rng, notes: string[]): Json {
  if (rng.chance(0.05)) { notes.push('spec is not an object'); return rng.pick([null, [], 'spec', 42]); }
  const spec = validSpec(rng, rng.chance(0.5));
  const ops = rng.int(1, 3);
  for (let k = 0; k < ops; k++) {
    const field = rng.pick(['sourcePodName', 'sourcePodUID', 'containers', 'lockKinds', 'storage', 'restore', 'ttlSecondsAfterFinished', 'unknown', 'nested', 'delete-required', 'duplicates', 'many-unknown', 'source']);
    switch (field) {
      case 'unknown': {
        // an own "__proto__" key, as JSON.parse makes it (an assignment would change the prototype)
        Object.defineProperty(spec, rng.pick(['podName', 'extra', '__proto__', 'constructor']), { value: rng.pick(WRONG)(), enumerable: true, writable: true, configurable: true });
        break;
      }
      case 'many-unknown': for (let i = 0; i < rng.int(100, 5000); i++) spec[`unknownField${i}`] = i; break;
      case 'delete-required': delete spec.sourcePodName; delete spec.source; break;
      case 'source': {
        // a path instead of a name, a pod-only option beside an archive, or both sources at once
        const file = rng.pick(['../x.tar', 'a/b.tar', '/var/lib/kubelet/checkpoints/x.tar', '..', '.', 'x\0.tar', 'a\\b', '', 'é'.repeat(128), 'x'.repeat(256)]);
        spec.source = rng.chance(0.2) ? rng.pick(WRONG)() : { kubeletCheckpoint: { node: rng.chance(0.2) ? rng.pick(WRONG)() : 'node-a', file: rng.chance(0.8) ? file : rng.pick(WRONG)() } };
        if (rng.chance(0.3)) spec.sourcePodName = 'db-0';
        break;
      }
      case 'duplicates': spec.containers = ['db', 'db']; spec.lockKinds = ['OFD', 'OFD']; break;
      case 'nested': {
        const where = rng.pick(['storage', 'restore']);
        const sub = (spec[where] && typeof spec[where] === 'object' && !Array.isArray(spec[where]) ? spec[where] : {}) as Obj;
        const key = where === 'storage' ? rng.pick(['nodeLocal', 'persistentVolumeClaim', 'other']) : rng.pick(['mode', 'timeoutSeconds', 'holdSeconds', 'other']);
        sub[key] = where === 'storage' && rng.chance(0.5) ? { path: rng.pick(WRONG)(), claimName: rng.pick(WRONG)(), subPath: rng.pick(WRONG)() } : rng.pick(WRONG)();
        spec[where] = sub;
        break;
      }
      default: spec[field] = rng.pick(WRONG)();
    }
    notes.push(`spec.${field} mutated`);
  }
  return spec;
}

// ---- status

function time(rng: Rng, now: number): string {
  return rng.weighted([
    [8, iso(now - rng.int(0, 600_000))], [2, iso(now - rng.int(600_000, 400 * 86_400_000))], [1, iso(now + rng.int(1, 600_000))],
    [1, '9999-12-31T23:59:59Z'], [1, '1970-01-01T00:00:00Z'], [0.5, '0001-01-01T00:00:00Z'], [0.5, iso(now + 2 ** 31)],
  ] as const);
}

function counts(rng: Rng, edge: boolean): Obj {
  const v = () => (edge ? rng.pick([0, 2 ** 53 - 1, 2 ** 31, 1]) : rng.int(0, 2000));
  const c: Obj = { posix: v(), flock: v(), ofd: v(), lease: v() };
  if (rng.chance(0.6)) c.total = edge ? rng.pick([0, 2 ** 53 - 1]) : (c.posix as number) + (c.flock as number) + (c.ofd as number) + (c.lease as number);
  return c;
}

function condition(rng: Rng, now: number, type: string): Obj {
  return {
    type, status: rng.pick(['True', 'False', 'Unknown']), lastTransitionTime: time(rng, now),
    reason: rng.pick(['Pending', 'Dumping', 'Dumped', 'SourcePodNotFound', 'AgentFailed', 'Restored', 'Dispatched', 'NotDispatched', 'Failed', 'X']),
    message: rng.chance(0.02) ? 'm'.repeat(32768) : 'msg', ...(rng.chance(0.5) ? { observedGeneration: rng.int(0, 5) } : {}),
  };
}

function controllerStatus(rng: Rng, now: number, podName: string, edge: boolean, notes: string[]): Obj {
  const phase = rng.pick(['Pending', 'Dumping', 'Dumped', 'HandoverReady', 'Restored', 'Failed']);
  const node = rng.chance(0.9) ? 'node-a' : subdomain(rng, 253);
  const podUID = uid(rng);
  const st: Obj = { phase, observedGeneration: rng.int(0, 3), startTime: time(rng, now), message: 'x' };
  const conds: Obj[] = [condition(rng, now, 'Ready')];
  if (phase !== 'Pending' || rng.chance(0.3)) {
    st.nodeName = node;
    st.sourcePodUID = podUID;
    st.dispatchTime = time(rng, now);
    conds.push(condition(rng, now, 'Dispatched'));
  }
  st.conditions = conds;
  if (phase !== 'Pending' && rng.chance(0.8)) {
    const a: Obj = {
      nodeName: rng.chance(0.9) ? node : 'node-b', state: rng.pick(['Dumping', 'Dumped', 'HandoverReady', 'Failed']),
      ...(rng.chance(0.8) ? { podUID: rng.chance(0.9) ? podUID : uid(rng) } : {}),
      ...(rng.chance(0.7) ? { heartbeatTime: time(rng, now) } : {}), ...(rng.chance(0.5) ? { startTime: time(rng, now) } : {}),
      ...(rng.chance(0.5) ? { completionTime: time(rng, now) } : {}), ...(rng.chance(0.5) ? { dumpMilliseconds: edge ? 2 ** 53 - 1 : rng.int(0, 10_000) } : {}),
      ...(rng.chance(0.5) ? { imageLocation: edge ? `/var/lib/${'p'.repeat(4080)}` : `/var/lib/lockmig/checkpoints/ns/${podName}` } : {}),
      ...(rng.chance(0.6) ? { locks: counts(rng, edge) } : {}), ...(rng.chance(0.5) ? { files: edge ? 2 ** 53 - 1 : rng.int(0, 100) } : {}),
      ...(rng.chance(0.3) ? { skippedFds: rng.int(0, 10) } : {}), ...(rng.chance(0.2) ? { handoverSocket: '/run/lockmig/vault.sock' } : {}),
      ...(rng.chance(0.3) ? { reason: edge ? 'R'.repeat(1024) : 'DumpFailed' } : {}),
      ...(rng.chance(0.3) ? { message: edge ? 'agent message '.repeat(2340).slice(0, 32768) : 'ptrace denied' } : {}),
      ...(rng.chance(0.1) ? { imagesDeleted: rng.chance(0.5) } : {}), ...(rng.chance(0.3) ? { observedGeneration: rng.int(0, 3) } : {}),
    };
    st.agent = a;
    notes.push(`agent ${a.state as string}`);
  }
  if (rng.chance(0.2)) st.restoredPod = { name: subdomain(rng, 40), ...(rng.chance(0.5) ? { nodeName: 'node-b', time: time(rng, now) } : {}) };
  if (phase === 'Failed' || phase === 'Dumped' || phase === 'HandoverReady' || phase === 'Restored') st.completionTime = time(rng, now);
  if (rng.chance(0.3)) st.locks = counts(rng, edge);
  return st;
}

function handEdited(rng: Rng, now: number, podName: string, notes: string[]): Obj {
  const st = controllerStatus(rng, now, podName, true, notes);
  const op = rng.pick(['foreign-conditions', 'full-conditions', 'no-conditions', 'phase-only', 'big-message', 'max-counts', 'agent-only', 'future-everything', 'drop-node']);
  notes.push(`hand-edited: ${op}`);
  switch (op) {
    case 'foreign-conditions': {
      const n = rng.int(1, 16);
      st.conditions = [...((st.conditions as Obj[]) ?? []), ...Array.from({ length: n }, (_, i) => condition(rng, now, `example.com/Cond${i}`))].slice(0, 16);
      break;
    }
    case 'full-conditions': st.conditions = Array.from({ length: 16 }, (_, i) => condition(rng, now, `example.com/Cond${i}`)); break;
    case 'no-conditions': delete st.conditions; break;
    case 'phase-only': return { phase: rng.pick(['Pending', 'Dumping', 'Dumped', 'HandoverReady', 'Restored', 'Failed']) };
    case 'big-message': st.message = 'y'.repeat(32768); break;
    case 'max-counts': st.locks = { posix: 2 ** 53 - 1, flock: 2 ** 53 - 1, ofd: 2 ** 53 - 1, lease: 2 ** 53 - 1 }; st.files = 2 ** 53 - 1; break;
    case 'agent-only': return { agent: (st.agent as Obj) ?? { nodeName: 'node-a', state: 'Dumped' } };
    case 'future-everything': for (const k of ['startTime', 'dispatchTime', 'completionTime']) st[k] = '9999-12-31T23:59:59Z'; break;
    case 'drop-node': delete st.nodeName; break;
  }
  return st;
}

function garbageStatus(rng: Rng, now: number, podName: string, notes: string[]): Json {
  if (rng.chance(0.1)) return rng.pick([[], 'status', 7, true]);
  const st = controllerStatus(rng, now, podName, rng.chance(0.5), notes);
  const keys = ['phase', 'observedGeneration', 'conditions', 'nodeName', 'agent', 'locks', 'startTime', 'dispatchTime', 'restoredPod', 'durations', 'files', 'message'];
  for (let i = rng.int(1, 3); i > 0; i--) {
    const k = rng.pick(keys);
    st[k] = rng.pick([...WRONG, () => 'not-a-time', () => -5, () => [{}], () => ({ state: 'Teleported', nodeName: 3 })])();
    notes.push(`status.${k} garbage`);
  }
  return st;
}

// ---- pod and clock

function pod(rng: Rng, spec: Json, status: Json, now: number): PodLike | undefined {
  if (rng.chance(0.15)) return undefined;
  const s = (spec && typeof spec === 'object' && !Array.isArray(spec) ? spec : {}) as Obj;
  const st = (status && typeof status === 'object' && !Array.isArray(status) ? status : {}) as Obj;
  const containers = Array.isArray(s.containers) && s.containers.every((c) => typeof c === 'string') && rng.chance(0.8)
    ? (s.containers as string[]).map((name) => ({ name }))
    : [{ name: 'db' }];
  return {
    metadata: {
      name: typeof s.sourcePodName === 'string' ? s.sourcePodName : 'p',
      ...(rng.chance(0.95) ? { uid: rng.weighted([[5, typeof st.sourcePodUID === 'string' ? st.sourcePodUID : uid(rng)], [2, typeof s.sourcePodUID === 'string' ? s.sourcePodUID : uid(rng)], [1, uid(rng)]] as const) } : {}),
      ...(rng.chance(0.1) ? { deletionTimestamp: time(rng, now) } : {}),
    },
    spec: {
      ...(rng.chance(0.85) ? { nodeName: rng.chance(0.9) ? (typeof st.nodeName === 'string' ? st.nodeName : 'node-a') : 'node-z' } : {}),
      containers, ...(rng.chance(0.2) ? { initContainers: [{ name: 'init' }] } : {}),
    },
    status: { phase: rng.pick(['Running', 'Running', 'Running', 'Pending', 'Succeeded', 'Failed', 'Unknown']) },
  };
}

/** One scenario: an object as the API server would hold it, its pod, and the time of the pass. */
export function makeScenario(seed: string, index: number, opts: { specKind?: SpecKind; statusKind?: StatusKind } = {}): Scenario {
  const rng = new Rng(seed, index);
  const notes: string[] = [];
  const specKind = opts.specKind ?? rng.weighted([[4, 'valid'], [3, 'absurd'], [3, 'invalid']] as const);
  const statusKind = opts.statusKind ?? rng.weighted([[2, 'none'], [5, 'controller'], [2, 'hand-edited'], [1, 'garbage']] as const);
  const created = T0 + rng.int(0, 86_400_000);
  const now = created + rng.weighted([[6, rng.int(0, 600_000)], [2, rng.int(600_000, 40 * 86_400_000)], [1, -rng.int(1, 600_000)], [1, 400 * 86_400_000]] as const);
  const spec: Json = specKind === 'invalid' ? invalidSpec(rng, notes) : validSpec(rng, specKind === 'absurd');
  const podName = spec && typeof spec === 'object' && !Array.isArray(spec) && typeof spec.sourcePodName === 'string' ? spec.sourcePodName : 'p';
  let status: Json | undefined;
  switch (statusKind) {
    case 'none': status = undefined; break;
    case 'controller': status = controllerStatus(rng, now, podName, false, notes); break;
    case 'hand-edited': status = handEdited(rng, now, podName, notes); break;
    case 'garbage': status = garbageStatus(rng, now, podName, notes); break;
  }
  const deleting = rng.chance(0.08);
  const metadata: Obj = {
    name: subdomain(rng, rng.chance(0.1) ? 253 : 40), namespace: label(rng, 20), uid: uid(rng), resourceVersion: String(rng.int(1, 1e9)),
    generation: rng.weighted([[8, 1], [2, rng.int(2, 10)], [0.5, 2 ** 53 - 1]] as const), creationTimestamp: iso(created),
    ...(deleting ? { deletionTimestamp: time(rng, now) } : {}),
    ...(rng.chance(0.5) ? { finalizers: rng.chance(0.8) ? ['lockmig.dev/images'] : ['example.com/other', 'lockmig.dev/images'] } : {}),
    ...(rng.chance(0.4) ? { labels: { 'lockmig.dev/node': rng.chance(0.7) ? 'node-a' : 'node-b', app: 'x' } } : {}),
  };
  if (deleting) notes.push('being deleted');
  const object: Obj = { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata, spec, ...(status !== undefined ? { status } : {}) };
  const sourceNode = { exists: rng.chance(0.7) };
  return { index, specKind, statusKind, object, pod: pod(rng, spec, status ?? null, now), sourceNode, now: new Date(now), notes };
}
