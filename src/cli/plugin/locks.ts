/**
 * `kubectl lockmig locks`: live locks of pods, from the agents on their nodes, filtered to the
 * namespaces where the caller may list pods, rendered as one table in which the rows on the same
 * file are kept together (holders first, then who waits for them).
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { HolderRef, LockRow, NodeLocks, OpenRow, Owner, VolumeRef, WaiterRow } from '../../agent/live-locks.js';
import { CliError, EXIT } from '../args.js';
import { apiMessage, findAgents, PodReadAccess, statusOf, type AgentTransport, type Cluster } from './kube.js';

export interface LocksQuery {
  /** undefined with allNamespaces */
  readonly namespace?: string;
  readonly allNamespaces: boolean;
  readonly pod?: string;
  readonly pathContains?: string;
  readonly agentNamespace: string;
}

export interface LocksResult {
  /** per node, only what the caller may see */
  readonly nodes: readonly NodeLocks[];
  /** agents that did not answer (node → why) */
  readonly unreachable: ReadonlyMap<string, string>;
  /** namespaces whose rows were dropped because the caller may not list pods there */
  readonly hiddenNamespaces: readonly string[];
}

const HIDDEN = '(hidden)';

/** A holder in a namespace the caller may not read: only the kind of lock stays. */
function redactHolder(h: HolderRef): HolderRef {
  return { ...h, namespace: h.namespace === '' ? '' : HIDDEN, pod: h.pod === '' ? '' : HIDDEN, container: '', hostPid: null, pid: null, fd: null, path: null };
}

export async function queryLocks(c: Cluster, q: LocksQuery, transport: AgentTransport): Promise<LocksResult> {
  const access = new PodReadAccess(c);
  const mayAll = await access.may('');
  if (!q.allNamespaces && !(await access.may(q.namespace!))) {
    throw new CliError(`you may not list pods in namespace "${q.namespace}", so you see no locks there (a SelfSubjectAccessReview said no)`, EXIT.FAILURE);
  }
  // which nodes to ask: the pod's, the namespace's pods', or every agent
  const agents = await findAgents(c, q.agentNamespace);
  let nodes: Set<string> | null = null;
  if (q.pod) {
    let pod: V1Pod;
    try {
      pod = await c.core.readNamespacedPod({ namespace: q.namespace!, name: q.pod });
    } catch (err) {
      if (statusOf(err) === 404) throw new CliError(`pod "${q.pod}" not found in namespace "${q.namespace}"`, EXIT.FAILURE);
      throw new CliError(`cannot read pod ${q.namespace}/${q.pod}: ${apiMessage(err)}`, EXIT.FAILURE);
    }
    if (!pod.spec?.nodeName) throw new CliError(`pod ${q.namespace}/${q.pod} is not scheduled to a node yet: it holds no locks`, EXIT.FAILURE);
    nodes = new Set([pod.spec.nodeName]);
  } else if (!q.allNamespaces) {
    const pods = (await c.core.listNamespacedPod({ namespace: q.namespace! })).items;
    nodes = new Set(pods.map((p) => p.spec?.nodeName).filter((n): n is string => !!n));
  }
  const unreachable = new Map<string, string>();
  if (nodes) for (const n of nodes) if (!agents.has(n)) unreachable.set(n, 'no running lockmig agent on this node');
  const ask = [...agents].filter(([n]) => !nodes || nodes.has(n));
  const answers = await Promise.all(ask.map(async ([node, agent]) => {
    try {
      return await transport(agent, { ...(q.namespace && !q.allNamespaces ? { namespace: q.namespace } : {}), ...(q.pod ? { pod: q.pod } : {}) });
    } catch (err) {
      unreachable.set(node, (err as Error).message);
      return null;
    }
  }));
  const hidden = new Set<string>();
  const visible = async (o: Owner): Promise<boolean> => {
    const ok = o.namespace === '' ? mayAll : await access.may(o.namespace);
    if (!ok && o.namespace !== '') hidden.add(o.namespace);
    return ok;
  };
  const path = q.pathContains;
  const out: NodeLocks[] = [];
  for (const n of answers) {
    if (!n) continue;
    const locks: LockRow[] = [];
    for (const l of n.locks) {
      if (!(await visible(l))) continue;
      if (path !== undefined && !(l.path ?? '').includes(path)) continue;
      locks.push(l);
    }
    const waiters: WaiterRow[] = [];
    for (const w of n.waiters) {
      const mine = await visible(w);
      const theirs = await visible(w.holder);
      // a waiter is shown when its pod or its holder's pod is visible; the invisible side is redacted
      if (!mine && !theirs) continue;
      const row: WaiterRow = mine
        ? (theirs ? w : { ...w, holder: redactHolder(w.holder) })
        : { ...w, namespace: HIDDEN, pod: HIDDEN, container: '', hostPid: null, pid: null, fd: null, path: w.holder.path, volume: null };
      if (path !== undefined && !(row.path ?? '').includes(path) && !(row.holder.path ?? '').includes(path)) continue;
      waiters.push(row);
    }
    const opens: OpenRow[] = [];
    for (const x of n.opens ?? []) {
      if (!(await visible(x))) continue;
      if (path !== undefined && !(x.path ?? '').includes(path)) continue;
      opens.push(x);
    }
    out.push({ ...n, locks, waiters, opens });
  }
  return { nodes: out, unreachable, hiddenNamespaces: [...hidden].sort() };
}

// ---- rendering ----

export function formatVolume(v: VolumeRef | null): string {
  if (!v) return '<none>';
  if (v.type === 'persistentVolumeClaim') return `${v.name} (pvc ${v.claimName})`;
  if (v.type === 'hostPath') return `${v.name} (hostPath ${v.hostPath})`;
  return `${v.name} (${v.type})`;
}

function ago(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

const dash = (v: string | number | null | undefined): string => (v === null || v === undefined || v === '' ? '?' : String(v));

function who(o: Owner & { fd?: number | null }): string {
  if (o.namespace === HIDDEN) return 'a pod in a namespace you may not read';
  if (o.pod === '') return `host process${o.hostPid !== null ? ` ${o.hostPid}` : ''} (not in a pod)`;
  return `${o.namespace}/${o.pod}${o.container ? `/${o.container}` : ''} pid ${dash(o.pid)}${o.fd !== undefined && o.fd !== null ? ` fd ${o.fd}` : ''}`;
}

export function table(rows: readonly string[][]): string {
  const w = rows[0]!.map(() => 0);
  for (const r of rows) r.forEach((c, i) => { if (c.length > w[i]!) w[i] = c.length; });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('   ').trimEnd()).join('\n');
}

interface Group {
  readonly node: string;
  readonly file: string;
  readonly locks: LockRow[];
  readonly waiters: WaiterRow[];
  readonly opens: OpenRow[];
}

/** Rows on the same file (node + dev:ino) together; files with waiters or several pods first. */
export function groupByFile(nodes: readonly NodeLocks[]): Group[] {
  const groups = new Map<string, Group>();
  const g = (node: string, file: string): Group => {
    const k = `${node}\u0000${file}`;
    let x = groups.get(k);
    if (!x) { x = { node, file, locks: [], waiters: [], opens: [] }; groups.set(k, x); }
    return x;
  };
  for (const n of nodes) {
    for (const l of n.locks) g(n.node, l.file).locks.push(l);
    for (const w of n.waiters) g(n.node, w.file).waiters.push(w);
    for (const x of n.opens ?? []) g(n.node, x.file).opens.push(x);
  }
  const pods = (x: Group) => new Set([...x.locks, ...x.waiters, ...x.opens].map((r) => `${r.namespace}/${r.pod}`)).size;
  return [...groups.values()].sort((a, b) => (Number(b.waiters.length > 0) - Number(a.waiters.length > 0))
    || (Number(pods(b) > 1) - Number(pods(a) > 1))
    || (a.locks[0]?.namespace ?? '').localeCompare(b.locks[0]?.namespace ?? '')
    || (a.locks[0]?.pod ?? '').localeCompare(b.locks[0]?.pod ?? '')
    || (a.locks[0]?.path ?? '').localeCompare(b.locks[0]?.path ?? ''));
}

/** The table of `kubectl lockmig locks` (`wide`: NODE, HOST-PID and FILE too). */
export function renderLocks(nodes: readonly NodeLocks[], o: { wide?: boolean; showNamespace?: boolean } = {}): string {
  const wide = !!o.wide;
  const showNs = o.showNamespace !== false;
  const head = [...(showNs ? ['NAMESPACE'] : []), 'POD', 'CONTAINER', 'PID', 'FD', 'KIND', 'TYPE', 'RANGE', 'PATH', 'VOLUME', ...(wide ? ['NODE', 'HOST-PID', 'FILE'] : []), 'STATUS'];
  const rows: string[][] = [head];
  for (const grp of groupByFile(nodes)) {
    const podsOnFile = new Set([...grp.locks, ...grp.waiters, ...grp.opens].map((l) => `${l.namespace}/${l.pod}`));
    for (const l of grp.locks) {
      const blocked = grp.waiters.filter((w) => w.holder.hostPid === l.hostPid && w.holder.kind === l.kind && w.holder.start === l.start && w.holder.end === l.end).length;
      const status = [
        'held',
        ...(blocked ? [`blocks ${blocked}`] : []),
        ...(podsOnFile.size > 1 ? [`file shared by ${podsOnFile.size} pods`] : []),
      ].join(', ');
      rows.push([
        ...(showNs ? [l.namespace || '<host>'] : []), l.pod || '<host>', l.container || '-', dash(l.pid), l.fds.join(','), l.kind, l.type, `${l.start}-${l.end}`,
        l.path ?? '?', formatVolume(l.volume), ...(wide ? [grp.node, dash(l.hostPid), l.file] : []), status,
      ]);
    }
    for (const w of grp.waiters) {
      rows.push([
        ...(showNs ? [w.namespace || '<host>'] : []), w.pod || '<host>', w.container || '-', dash(w.pid), dash(w.fd), w.kind, w.type, `${w.start}-${w.end}`,
        w.path ?? '?', formatVolume(w.volume), ...(wide ? [grp.node, dash(w.hostPid), w.file] : []),
        `WAITING ${ago(w.waitingMs)} for ${who(w.holder)} (${w.holder.kind} ${w.holder.type} ${w.holder.start}-${w.holder.end})`,
      ]);
    }
    for (const x of grp.opens) {
      rows.push([
        ...(showNs ? [x.namespace || '<host>'] : []), x.pod || '<host>', x.container || '-', dash(x.pid), String(x.fd), '-', '-', '-',
        x.path ?? '?', formatVolume(x.volume), ...(wide ? [grp.node, dash(x.hostPid), x.file] : []),
        'open, no lock (a reader, or polling for the lock)',
      ]);
    }
  }
  return `${table(rows)}\n`;
}

/** -o json / yaml: a List-shaped object. */
export function locksObject(r: LocksResult): Record<string, unknown> {
  return {
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'NodeLocksList',
    items: r.nodes,
    ...(r.unreachable.size ? { unreachable: Object.fromEntries(r.unreachable) } : {}),
  };
}
