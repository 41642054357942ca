/**
 * Test harness for a real Kubernetes API server (etcd + kube-apiserver from KUBEBUILDER_ASSETS or
 * the kit), kubectl and helm. See README "Tests" and docs/e2e.md.
 *
 * One server per test file, started in beforeAll (decision): a start costs about 3.5 CPU-seconds
 * (4–8 s wall on 2 busy cores; a stop about 1 s), and the 9 files that need one start 11 servers,
 * roughly 20 s of wall time in a ~5 minute `npm test`. One server shared by the whole run would save
 * about half of that, but the files would then share cluster-scoped state (CRD versions, webhook
 * registrations that intercept every pod, RBAC, Nodes) and could not restart the server, compact
 * etcd or turn the watch cache off, which is what the informer, leader and controller tests need.
 */
/** Finding the binaries; `missing({ k8s: true })` in test/helpers/env.ts uses it for the SKIPPING banner. */
export { findK8sAssets, k8sAssets, type K8sAssets } from './assets.js';
/** etcd + kube-apiserver on free loopback ports: start, restart, compact, stop. */
export { startApiServer, freePort, ApiServerStartError, type ApiServerOptions, type KubeApiServer, type StaticUser } from './apiserver.js';
/** A fault-injecting HTTPS proxy in front of it (5xx, resets, cut watches, request log). */
export { startFaultProxy, type FaultProxy, type FaultRule, type ProxiedRequest } from './proxy.js';
/** Namespaces with their default ServiceAccount, finalizer cleanup, ServiceAccount tokens. */
export { createTestNamespace, ensureServiceAccount, serviceAccountKubeconfig, stripCheckpointFinalizers, randomSuffix, type TestNamespace } from './namespaces.js';
/** kubectl and helm child processes. */
export { kubectl, helm, ok, type ToolResult } from './tools.js';
/** The chart rendered by helm; components acting with the chart's RBAC; the CRD installed. */
export { CHART_DIR, chartIdentity, helmTemplate, installCrd, parseManifests, type ChartIdentity, type Manifest, type Component, type Target } from './chart.js';
export { endpointOf, writeKubeconfig } from './kubeconfig.js';
