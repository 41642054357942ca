/**
 * `kubectl lockmig`: the kubectl plugin (bin kubectl-lockmig). Subcommands: locks, checkpoint,
 * migrate, status, inspect. kubectl's conventions: -n/--namespace, -A/--all-namespaces,
 * --context, --kubeconfig, -o wide|json|yaml, --help; exit 0 ok, 1 error, 2 usage.
 */
import { dumpYaml } from '@kubernetes/client-node';
import { RESTORE_MODES, type RestoreMode } from '../../api/index.js';
import { CliError, EXIT, parse, type Options } from '../args.js';
import { checkpointToJson, renderCheckpoint } from '../commands/inspect.js';
import { connect, DEFAULT_AGENT_NAMESPACE, podProxyTransport, type AgentTransport, type Cluster } from './kube.js';
import { locksObject, queryLocks, renderLocks } from './locks.js';
import { checkpointCmd, fetchImages, getCheckpoint, listCheckpoints, migrateCmd, renderStatus } from './checkpoints.js';

export interface PluginIO {
  readonly stdout: (s: string) => void;
  readonly stderr: (s: string) => void;
  /** how /locks is read from an agent (default: the API server's pod proxy) */
  readonly transport?: (c: Cluster) => AgentTransport;
}

const GLOBAL = `Global flags:
  -n, --namespace NS        namespace (default: the current context's)
      --context NAME        kubeconfig context
      --kubeconfig PATH     kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)
  -h, --help`;

const TOP = `kubectl lockmig: see every file lock in the cluster, who holds it and who waits; checkpoint and migrate pods.

Commands:
  locks       live locks of pods (holders and blocked waiters), with pod, container, path and volume
  checkpoint  record a pod's locks in a LockCheckpoint
  migrate     checkpoint a pod, delete it, and wait until its replacement holds its locks
  status      LockCheckpoints and their conditions
  inspect     the locks recorded in a LockCheckpoint's images

Examples:
  kubectl lockmig locks -A
  kubectl lockmig locks db-0 -n shop
  kubectl lockmig migrate db-0 -n shop

Run 'kubectl lockmig <command> --help' for a command's flags. Docs: docs/kubectl-plugin.md`;

const USAGE: Record<string, string> = {
  locks: `Live file locks of pods: POSIX, OFD, flock and leases held by the pods' processes, and the processes
blocked waiting for a lock (F_SETLKW, F_OFD_SETLKW, flock) next to the holder they wait for. Rows on the
same file are kept together. Read from the lockmig agent on each node through the API server's pod proxy;
only namespaces where you may list pods are shown.

Usage:
  kubectl lockmig locks [POD] [-n NS | -A] [--path SUBSTR] [-o wide|json|yaml]

Examples:
  # who holds the lock my pod waits for ("database is locked")?
  kubectl lockmig locks -A
  # one pod's locks
  kubectl lockmig locks db-0 -n shop
  # every lock on a SQLite file, node, host pid and device:inode shown
  kubectl lockmig locks -A --path app.db -o wide

Flags:
  -A, --all-namespaces      every namespace you may list pods in
      --path SUBSTR         only rows whose path contains SUBSTR
  -o, --output FORMAT       wide, json or yaml
      --agent-namespace NS  where the lockmig agents run (default ${DEFAULT_AGENT_NAMESPACE})
${GLOBAL}`,
  checkpoint: `Record the locks of a running pod in a new LockCheckpoint (the agent on its node dumps them).

Usage:
  kubectl lockmig checkpoint POD [-n NS] [--mode Auto|Handover|Retake] [--name NAME] [--wait] [--timeout 120s]

Examples:
  kubectl lockmig checkpoint db-0 -n shop --wait

Flags:
      --mode MODE       restore mode: Auto (default), Handover or Retake (docs/api.md)
      --name NAME       the checkpoint's name (default: <pod>-<random>)
      --wait            wait until the locks are recorded, with progress lines
      --timeout DUR     how long --wait waits (default 120s)
  -o, --output FORMAT   json or yaml: print the checkpoint
${GLOBAL}`,
  migrate: `Move a pod of a StatefulSet or Deployment with its locks: a LockCheckpoint with target policy
Workload (the one lockmig's stop webhook makes, docs/migration.md) is created and waited for, then the
pod is deleted; its controller's replacement starts already holding the locks (same node: OFD and flock
locks are never free). Progress lines go to stderr; the final line says where the locks are.

Usage:
  kubectl lockmig migrate POD [-n NS] [--wait=false] [--timeout 300s]

Examples:
  kubectl lockmig migrate db-0 -n shop

Flags:
      --no-wait         return once the pod is deleted
      --timeout DUR     how long to wait for each step (default 300s)
${GLOBAL}`,
  status: `LockCheckpoints like 'kubectl get lckpt'; for one checkpoint, its conditions too.

Usage:
  kubectl lockmig status [CHECKPOINT] [-n NS | -A] [-o wide|json|yaml]

Examples:
  kubectl lockmig status -A
  kubectl lockmig status db-0-3e4ff46f -n shop

Flags:
  -A, --all-namespaces
  -o, --output FORMAT   wide, json or yaml
${GLOBAL}`,
  inspect: `The locks recorded in a LockCheckpoint's images (api storage: its ConfigMaps, read through the API),
validated and printed as 'lockmig inspect' prints them.

Usage:
  kubectl lockmig inspect CHECKPOINT [-n NS] [-o json]

Examples:
  kubectl lockmig inspect db-0-3e4ff46f -n shop
${GLOBAL}`,
};

const COMMON: Options = {
  namespace: { type: 'string', short: 'n' },
  context: { type: 'string' },
  kubeconfig: { type: 'string' },
};

const FLAGS: Record<string, Options> = {
  locks: { ...COMMON, 'all-namespaces': { type: 'boolean', short: 'A' }, path: { type: 'string' }, output: { type: 'string', short: 'o' }, 'agent-namespace': { type: 'string' } },
  checkpoint: { ...COMMON, mode: { type: 'string' }, name: { type: 'string' }, wait: { type: 'boolean' }, timeout: { type: 'string' }, output: { type: 'string', short: 'o' } },
  migrate: { ...COMMON, 'no-wait': { type: 'boolean' }, timeout: { type: 'string' } },
  status: { ...COMMON, 'all-namespaces': { type: 'boolean', short: 'A' }, output: { type: 'string', short: 'o' } },
  inspect: { ...COMMON, output: { type: 'string', short: 'o' } },
};

/** `90`, `90s`, `5m`, `1h` → ms */
export function parseDuration(s: string): number {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new CliError(`invalid duration "${s}" (e.g. 90s, 5m)`);
  const n = Number(m[1]);
  return n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000);
}

function output(v: unknown, allowed: readonly string[]): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !allowed.includes(v)) throw new CliError(`unsupported output format "${String(v)}" (allowed: ${allowed.join(', ')})`);
  return v;
}

function emit(io: PluginIO, format: 'json' | 'yaml', obj: unknown): void {
  io.stdout(format === 'json' ? `${JSON.stringify(obj, null, 2)}\n` : dumpYaml(obj));
}

export async function runPlugin(argv: readonly string[], io: PluginIO): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    io.stdout(`${TOP}\n`);
    return cmd ? EXIT.OK : EXIT.USAGE;
  }
  const flags = FLAGS[cmd];
  if (!flags) {
    io.stderr(`error: unknown command "${cmd}" for "kubectl lockmig"\nRun 'kubectl lockmig --help' for usage.\n`);
    return EXIT.USAGE;
  }
  if (rest.includes('--help') || rest.includes('-h')) { io.stdout(`${USAGE[cmd]!}\n`); return EXIT.OK; }
  const p = parse(rest, flags, USAGE[cmd]!);
  if (!p) return EXIT.OK;
  const v = p.values as Record<string, string | boolean | undefined>;
  const pos = p.positionals;
  const c = connect({ ...(typeof v.kubeconfig === 'string' ? { kubeconfig: v.kubeconfig } : {}), ...(typeof v.context === 'string' ? { context: v.context } : {}) });
  const ns = (v.namespace as string | undefined) ?? c.contextNamespace;
  const all = v['all-namespaces'] === true;
  if (all && v.namespace !== undefined) throw new CliError('-A and -n cannot be used together');
  const progress = { line: (s: string) => io.stderr(`${s}\n`) };

  switch (cmd) {
    case 'locks': {
      if (pos.length > 1) throw new CliError(`expected at most one POD\n${USAGE.locks}`);
      if (pos.length === 1 && all) throw new CliError('a POD cannot be combined with -A: name its namespace with -n');
      const out = output(v.output, ['wide', 'json', 'yaml']);
      const r = await queryLocks(c, {
        ...(all ? {} : { namespace: ns }), allNamespaces: all, ...(pos[0] ? { pod: pos[0] } : {}),
        ...(typeof v.path === 'string' ? { pathContains: v.path } : {}),
        agentNamespace: (v['agent-namespace'] as string | undefined) ?? DEFAULT_AGENT_NAMESPACE,
      }, (io.transport ?? podProxyTransport)(c));
      for (const [node, why] of r.unreachable) io.stderr(`warning: node ${node}: ${why}\n`);
      if (r.hiddenNamespaces.length) io.stderr(`note: rows in ${r.hiddenNamespaces.length} namespace(s) where you may not list pods are not shown\n`);
      const answered = r.nodes.length;
      if (answered === 0 && r.unreachable.size > 0) throw new CliError('no lockmig agent answered', EXIT.FAILURE);
      if (out === 'json' || out === 'yaml') { emit(io, out, locksObject(r)); return EXIT.OK; }
      const rows = r.nodes.reduce((n, x) => n + x.locks.length + x.waiters.length, 0);
      if (rows === 0) {
        io.stderr(`No locks found${all ? '' : ` in ${ns} namespace`}${pos[0] ? ` for pod ${pos[0]}` : ''}.\n`);
        return EXIT.OK;
      }
      // one namespace asked for: no NAMESPACE column, unless a row (a waiter, its holder) is from another one
      const namespaces = new Set(r.nodes.flatMap((n) => [...n.locks, ...n.waiters, ...(n.opens ?? [])].map((x) => x.namespace)));
      io.stdout(renderLocks(r.nodes, { wide: out === 'wide', showNamespace: all || namespaces.size > 1 || !namespaces.has(ns) }));
      return EXIT.OK;
    }
    case 'checkpoint': {
      if (pos.length !== 1) throw new CliError(`expected exactly one POD\n${USAGE.checkpoint}`);
      const mode = v.mode as string | undefined;
      if (mode !== undefined && !(RESTORE_MODES as readonly string[]).includes(mode)) throw new CliError(`--mode must be one of ${RESTORE_MODES.join(', ')}, got "${mode}"`);
      const out = output(v.output, ['json', 'yaml']);
      const r = await checkpointCmd(c, ns, pos[0]!, {
        ...(mode ? { mode: mode as RestoreMode } : {}), ...(typeof v.name === 'string' ? { name: v.name } : {}),
        wait: v.wait === true, timeoutMs: parseDuration((v.timeout as string | undefined) ?? '120s'),
      }, progress);
      if (out) emit(io, out as 'json' | 'yaml', r.cp);
      else io.stdout(`${r.final}\n`);
      return EXIT.OK;
    }
    case 'migrate': {
      if (pos.length !== 1) throw new CliError(`expected exactly one POD\n${USAGE.migrate}`);
      const r = await migrateCmd(c, ns, pos[0]!, { wait: v['no-wait'] !== true, timeoutMs: parseDuration((v.timeout as string | undefined) ?? '300s') }, progress);
      io.stdout(`${r.final}\n`);
      return EXIT.OK;
    }
    case 'status': {
      if (pos.length > 1) throw new CliError(`expected at most one CHECKPOINT\n${USAGE.status}`);
      const out = output(v.output, ['wide', 'json', 'yaml']);
      let list;
      if (pos[0]) {
        if (all) throw new CliError('a CHECKPOINT cannot be combined with -A');
        const cp = await getCheckpoint(c, ns, pos[0]);
        if (!cp) throw new CliError(`lockcheckpoint "${pos[0]}" not found in namespace "${ns}"`, EXIT.FAILURE);
        list = [cp];
      } else {
        list = await listCheckpoints(c, all ? undefined : ns);
      }
      if (out === 'json' || out === 'yaml') { emit(io, out, pos[0] ? list[0] : { apiVersion: 'v1', kind: 'List', items: list }); return EXIT.OK; }
      if (list.length === 0) { io.stderr(`No LockCheckpoints found${all ? '' : ` in ${ns} namespace`}.\n`); return EXIT.OK; }
      io.stdout(renderStatus(list, { showNamespace: all, wide: out === 'wide', conditions: !!pos[0] }));
      return EXIT.OK;
    }
    case 'inspect': {
      if (pos.length !== 1) throw new CliError(`expected exactly one CHECKPOINT\n${USAGE.inspect}`);
      const out = output(v.output, ['json']);
      const cp = await getCheckpoint(c, ns, pos[0]!);
      if (!cp) throw new CliError(`lockcheckpoint "${pos[0]}" not found in namespace "${ns}"`, EXIT.FAILURE);
      const images = await fetchImages(c, cp);
      if (out === 'json') { emit(io, 'json', { checkpoint: `${ns}/${pos[0]}`, containers: images.map((i) => ({ container: i.container, ...(checkpointToJson(i.checkpoint) as object) })) }); return EXIT.OK; }
      io.stdout(images.map((i) => `== container ${i.container} (LockCheckpoint ${ns}/${pos[0]}, storage api)\n${renderCheckpoint(i.checkpoint)}`).join('\n'));
      return EXIT.OK;
    }
  }
  return EXIT.USAGE;
}
