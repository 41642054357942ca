/**
 * charts/lockmig rendered by the real helm, and components acting with exactly the chart's RBAC:
 * `chartIdentity(api, 'agent', ns)` applies the agent's ServiceAccount, ClusterRole and bindings
 * as `helm template` renders them into namespace `ns`, and returns a kubeconfig holding a token of
 * that ServiceAccount. A component run with it gets a real 403 for anything the chart forgot.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import type { KubeConfig } from '@kubernetes/client-node';
import { helm, kubectl, ok } from './tools.js';
import { serviceAccountKubeconfig } from './namespaces.js';
import type { KubeApiServer } from './apiserver.js';

export const CHART_DIR = fileURLToPath(new URL('../../../charts/lockmig', import.meta.url));

export type Manifest = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [k: string]: any };

export interface TemplateOptions {
  readonly release?: string;
  readonly namespace?: string;
  /** Values as `--set-json`-able objects, written to a values file. */
  readonly values?: Record<string, unknown>;
  /** `--api-versions` (capabilities helm template cannot discover offline). */
  readonly apiVersions?: readonly string[];
  readonly showOnly?: readonly string[];
  readonly extraArgs?: readonly string[];
}

/** Parses a multi-document YAML stream, dropping empty documents. */
export function parseManifests(text: string): Manifest[] {
  return YAML.parseAllDocuments(text).map((d) => {
    if (d.errors.length > 0) throw new Error(`helm output is not YAML: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as Manifest | null;
  }).filter((d): d is Manifest => d !== null && d !== undefined);
}

/** Writes values to a temp file next to nothing the chart reads; returns the args for helm. */
function valuesArgs(values: Record<string, unknown> | undefined, dir: string): string[] {
  if (!values) return [];
  fs.mkdirSync(dir, { recursive: true });
  const f = path.join(dir, `values-${process.pid}-${Math.random().toString(16).slice(2)}.json`);
  fs.writeFileSync(f, JSON.stringify(values));
  return ['-f', f];
}

export function templateArgs(o: TemplateOptions, tmp: string): string[] {
  return [
    o.release ?? 'lockmig', CHART_DIR, '--namespace', o.namespace ?? 'lockmig-system',
    ...valuesArgs(o.values, tmp),
    ...(o.apiVersions ?? []).flatMap((v) => ['--api-versions', v]),
    ...(o.showOnly ?? []).flatMap((s) => ['--show-only', s]),
    ...(o.extraArgs ?? []),
  ];
}

/** `helm template` → parsed objects (throws with helm's message when it fails). */
export async function helmTemplate(o: TemplateOptions = {}, tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-helm-values-'))): Promise<{ docs: Manifest[]; text: string }> {
  try {
    const text = ok(await helm(['template', ...templateArgs(o, tmp)]), 'helm template');
    return { docs: parseManifests(text), text };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export type Component = 'controller' | 'agent' | 'webhook';

/**
 * Applies the component's ServiceAccount and RBAC exactly as the chart renders them for a release
 * installed into `namespace`, and returns a kubeconfig with that ServiceAccount's token.
 */
export interface ChartIdentity {
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  readonly serviceAccount: string;
  readonly objects: readonly Manifest[];
  /** Deletes what was applied (on a throw-away envtest server there is no need). */
  cleanup(): Promise<void>;
}

/** Where identities are applied: an envtest server, or any cluster by kubeconfig (LOCKMIG_E2E_KUBECONFIG). */
export type Target = Pick<KubeApiServer, 'kubeConfig' | 'kubeconfigPath'> & { readonly dir: string };

export async function chartIdentity(api: Target, component: Component, namespace: string, o: { release?: string; values?: Record<string, unknown> } = {}): Promise<ChartIdentity> {
  const { docs, text } = await helmTemplate({
    release: o.release ?? 'lockmig', namespace, values: o.values,
    showOnly: [`templates/${component}-serviceaccount.yaml`, `templates/${component}-rbac.yaml`],
  });
  ok(await kubectl(['apply', '--server-side', '--field-manager', 'lockmig-tests', '-f', '-'], { kubeconfig: api.kubeconfigPath, input: text }), `kubectl apply (${component} RBAC)`);
  const sa = docs.find((d) => d.kind === 'ServiceAccount');
  if (!sa) throw new Error(`the chart renders no ServiceAccount for the ${component}`);
  const id = await serviceAccountKubeconfig(api.kubeConfig, path.join(api.dir, 'identities'), namespace, sa.metadata.name);
  return {
    kubeConfig: id.kubeConfig, kubeconfigPath: id.kubeconfigPath, serviceAccount: sa.metadata.name, objects: docs,
    async cleanup() {
      await kubectl(['delete', '--ignore-not-found', '--wait=false', '-f', '-'], { kubeconfig: api.kubeconfigPath, input: text });
    },
  };
}

/** Installs (server-side apply) the CRD from crds/ and waits until it is Established. */
export async function installCrd(api: { kubeconfigPath: string }, file = fileURLToPath(new URL('../../../crds/lockmig.dev_lockcheckpoints.yaml', import.meta.url))): Promise<void> {
  ok(await kubectl(['apply', '--server-side', '--field-manager', 'lockmig-tests', '-f', file], { kubeconfig: api.kubeconfigPath }), 'kubectl apply CRD');
  ok(await kubectl(['wait', '--for=condition=Established', '--timeout=60s', '-f', file], { kubeconfig: api.kubeconfigPath }), 'kubectl wait CRD Established');
}
