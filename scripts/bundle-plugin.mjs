#!/usr/bin/env node
/**
 * `npm run bundle:plugin` (after `npm run build`): the kubectl plugin as ONE self-contained file,
 * dist/plugin/kubectl-lockmig (CommonJS with a node shebang, the Kubernetes client included,
 * no native addon: the plugin never loads koffi), and dist/plugin/kubectl-lockmig.tar.gz holding
 * it, ready for a krew release (plugins/krew/lockmig.yaml: put the
 * archive's URL and `sha256sum` there). The npm package does not need it (its `bin` runs
 * dist/src/cli/kubectl-lockmig.js with node_modules).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entry = path.join(repo, 'dist/src/cli/kubectl-lockmig.js');
if (!fs.existsSync(entry)) {
  process.stderr.write(`bundle-plugin: ${entry} is missing: run \`npm run build\` first\n`);
  process.exit(1);
}
const esbuild = await import('esbuild');
const outDir = path.join(repo, 'dist/plugin');
fs.mkdirSync(outDir, { recursive: true });
const out = path.join(outDir, 'kubectl-lockmig');
const r = await esbuild.build({
  // CommonJS: an extension-less file outside any package.json is loaded as CommonJS by Node.js 20
  entryPoints: [entry], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: out, metafile: true, logLevel: 'warning',
});
const importMeta = r.warnings.filter((w) => /import\.meta/.test(w.text));
if (importMeta.length) {
  process.stderr.write(`bundle-plugin: code reached by the plugin uses import.meta, which a CommonJS bundle lacks: ${importMeta.map((w) => w.location?.file).join(', ')}\n`);
  process.exit(1);
}
const native = Object.keys(r.metafile.inputs).filter((f) => /koffi|\.node$/.test(f));
if (native.length) {
  process.stderr.write(`bundle-plugin: the plugin must not load native code, but the bundle reaches: ${native.join(', ')}\n`);
  process.exit(1);
}
// esbuild keeps the entry's shebang line first
fs.chmodSync(out, 0o755);
const tgz = path.join(outDir, 'kubectl-lockmig.tar.gz');
const t = spawnSync('tar', ['-czf', tgz, '-C', outDir, 'kubectl-lockmig'], { stdio: 'inherit' });
if (t.status !== 0) process.exit(1);
const sha = createHash('sha256').update(fs.readFileSync(tgz)).digest('hex');
process.stdout.write(`bundle-plugin: ${path.relative(repo, out)} (${Math.round(fs.statSync(out).size / 1024)} KiB), ${path.relative(repo, tgz)} sha256 ${sha}\n`);
