/**
 * Where the Kubernetes test binaries come from (etcd, kube-apiserver, kubectl, helm).
 *
 * 1. `KUBEBUILDER_ASSETS`: a directory with `etcd`, `kube-apiserver` and `kubectl` at its top level,
 *    the layout of controller-runtime's setup-envtest (`export KUBEBUILDER_ASSETS=$(setup-envtest use -p path)`)
 *    and of this project's kit. setup-envtest has no helm: then `helm` is taken from PATH.
 * 2. Only in this repository's layout: `../shared/k8s/assets.sh` beside the checkout, which unpacks the
 *    kit once into a cache and prints that directory.
 * 3. Neither: the suites that need them print a loud SKIPPING banner (and fail under `CI`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type K8sTool = 'etcd' | 'kube-apiserver' | 'kubectl' | 'helm';

export interface K8sAssets {
  /** The directory the binaries were found in. */
  readonly dir: string;
  /** How it was found, for messages. */
  readonly source: 'KUBEBUILDER_ASSETS' | 'kit';
  /** Absolute path of a binary (helm falls back to PATH when the assets dir has none). */
  readonly bin: Readonly<Record<K8sTool, string>>;
}

export type AssetsLookup = { readonly ok: true; readonly assets: K8sAssets } | { readonly ok: false; readonly reason: string };

const REQUIRED: readonly K8sTool[] = ['etcd', 'kube-apiserver', 'kubectl'];
/** `../shared/k8s/assets.sh` beside the checkout (test/helpers/env.ts imports this module: no import back). */
export const KIT_SCRIPT = fileURLToPath(new URL('../../../../shared/k8s/assets.sh', import.meta.url));

const isExecutable = (p: string): boolean => {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
};

function onPath(name: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(':')) if (d && isExecutable(path.join(d, name))) return path.join(d, name);
  return undefined;
}

/** Pure part: which binaries a directory provides, or why it does not do. */
export function assetsIn(dir: string, source: K8sAssets['source'], pathLookup: (n: string) => string | undefined = onPath): AssetsLookup {
  const lacking = REQUIRED.filter((t) => !isExecutable(path.join(dir, t)));
  if (lacking.length > 0) return { ok: false, reason: `${source}=${dir} has no ${lacking.join(', ')}` };
  const helm = isExecutable(path.join(dir, 'helm')) ? path.join(dir, 'helm') : pathLookup('helm');
  if (!helm) return { ok: false, reason: `${source}=${dir} has no helm, and there is none on PATH` };
  const bin = { etcd: path.join(dir, 'etcd'), 'kube-apiserver': path.join(dir, 'kube-apiserver'), kubectl: path.join(dir, 'kubectl'), helm };
  return { ok: true, assets: { dir, source, bin } };
}

const cache: { value?: AssetsLookup } = {};

/**
 * Finds the binaries (cached per process). On success KUBEBUILDER_ASSETS is exported, so child
 * processes and later lookups use the same directory.
 */
export function findK8sAssets(): AssetsLookup {
  if (cache.value) return cache.value;
  const fromEnv = process.env.KUBEBUILDER_ASSETS;
  let r: AssetsLookup;
  if (fromEnv) {
    r = assetsIn(path.resolve(fromEnv), 'KUBEBUILDER_ASSETS');
  } else if (fs.existsSync(KIT_SCRIPT)) {
    const p = spawnSync('bash', [KIT_SCRIPT], { encoding: 'utf8', timeout: 180_000 });
    const dir = p.stdout.trim().split('\n').pop() ?? '';
    r = p.status === 0 && dir ? assetsIn(dir, 'kit') : { ok: false, reason: `${KIT_SCRIPT} failed (exit ${p.status ?? p.signal}): ${p.stderr.trim().slice(-500)}` };
  } else {
    r = { ok: false, reason: 'KUBEBUILDER_ASSETS is not set (setup-envtest, or the kit\'s assets.sh, gives such a directory)' };
  }
  if (r.ok) process.env.KUBEBUILDER_ASSETS = r.assets.dir;
  cache.value = r;
  return r;
}

/** The binaries, or an Error saying how to get them (for code that runs after the skip decision). */
export function k8sAssets(): K8sAssets {
  const r = findK8sAssets();
  if (!r.ok) throw new Error(`Kubernetes test binaries not found: ${r.reason}`);
  return r.assets;
}
