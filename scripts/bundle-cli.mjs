#!/usr/bin/env node
/**
 * Second step of `npm run build` (after tsc): replaces the compiled modules of the
 * short-lived subcommands (restore, dump, inspect) with one esbuild bundle each, in place.
 *
 * Why: `lockmig restore` is the first process of every restore pod and `lockmig dump` is
 * timed against CRIU; both spent more time loading modules (≈40 files of ours plus protobufjs'
 * ≈30, each resolved, read and compiled separately) than doing their work. A single file
 * per command loads in about half the time (measured in docs/performance.md). The dispatcher
 * (dist/src/cli/main.js) and the command table are unchanged, so `lockmig <cmd>` works the
 * same with or without this step; the other subcommands (controller, agent, webhook, demo,
 * handover) keep their unbundled modules.
 *
 * Guards: koffi stays external (a native addon, loaded from node_modules); winston, prom-client
 * and the Kubernetes client must not be reachable from these commands at all — the build fails
 * if one is imported.
 *
 * Usage: node scripts/bundle-cli.mjs [--repo DIR]   (needs the devDependency esbuild)
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = process.argv.includes('--repo')
  ? path.resolve(process.argv[process.argv.indexOf('--repo') + 1])
  : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The commands that are bundled; everything else is loaded module by module. */
export const BUNDLED_COMMANDS = ['restore', 'dump', 'inspect'];
const EXTERNAL = ['koffi'];
const FORBIDDEN = ['winston', 'prom-client', '@kubernetes/client-node', 'ajv', 'yaml'];

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  process.stderr.write('bundle-cli: esbuild is not installed (devDependency): keeping the unbundled commands\n');
  process.exit(0);
}

const forbidden = {
  name: 'forbidden-imports',
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${FORBIDDEN.map((f) => f.replace(/[/@.-]/g, '\\$&')).join('|')})(/|$)`) }, (args) => ({
      errors: [{ text: `${args.path} is imported by ${path.relative(repo, args.importer)}: the bundled commands must not load it` }],
    }));
  },
};

for (const cmd of BUNDLED_COMMANDS) {
  const file = path.join(repo, 'dist/src/cli/commands', `${cmd}.js`);
  if (!fs.existsSync(file)) {
    process.stderr.write(`bundle-cli: ${path.relative(repo, file)} is missing (run tsc first)\n`);
    process.exit(1);
  }
  const out = await esbuild.build({
    entryPoints: [file],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: EXTERNAL,
    plugins: [forbidden],
    write: false,
    minifySyntax: true,
    legalComments: 'none',
    logLevel: 'silent',
    // CommonJS dependencies (protobufjs) call require(); give the ESM bundle one
    banner: { js: "import { createRequire as __lockmigCreateRequire } from 'node:module'; const require = __lockmigCreateRequire(import.meta.url);" },
  }).catch((err) => {
    process.stderr.write(`bundle-cli: ${cmd}: ${err.message}\n`);
    process.exit(1);
  });
  const code = out.outputFiles[0].contents;
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, code);
  fs.renameSync(tmp, file);
  process.stderr.write(`bundle-cli: dist/src/cli/commands/${cmd}.js bundled (${(code.length / 1024).toFixed(0)} KiB)\n`);
}
