/**
 * `lockmig demo [--keep] [--json]`: migrate real OFD, POSIX (SQLite) and flock locks between
 * two processes in separate mount+pid namespaces and prove it (see src/demo/run.ts).
 * Exit codes: 0 every lock moved and was proven held, 1 a check failed, 77 not root.
 */
import { EXIT, parse } from '../args.js';
import { runDemo, missingTools, NOT_ROOT_HELP } from '../../demo/run.js';

export const summary = 'migrate real locks between two processes on this machine and prove it (needs root)';

const USAGE = `usage: lockmig demo [--keep] [--json]

  --keep   keep the temporary volume and the checkpoint images for inspection
  --json   also print the report as one JSON object on the last line`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, { keep: { type: 'boolean' }, json: { type: 'boolean' } }, USAGE);
  if (!p) return EXIT.OK;
  if (process.getuid?.() !== 0) {
    process.stderr.write(`${NOT_ROOT_HELP}\n`);
    return EXIT.NOT_ROOT;
  }
  const lacking = missingTools();
  if (lacking.length > 0) {
    process.stderr.write(`lockmig demo needs ${lacking.join(', ')} (Debian: apt-get install util-linux python3 mount sqlite3)\n`);
    return EXIT.FAILURE;
  }
  const report = await runDemo({ out: (l) => process.stdout.write(`${l}\n`), keep: p.values.keep === true });
  if (p.values.json === true) {
    process.stdout.write(`${JSON.stringify(report, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
  }
  return report.proofs.every((x) => x.ok) ? EXIT.OK : EXIT.FAILURE;
}
