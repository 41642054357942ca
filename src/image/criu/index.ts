/**
 * CRIU interoperability: read a CRIU image directory into lockmig's checkpoint model
 * (readCriuImages + criuToCheckpoint), and write a lockmig checkpoint as CRIU images
 * (export.ts). Loaded lazily (src/image/input.ts) so reading a lockmig directory never pays for it.
 */
import path from 'node:path';
import type { Checkpoint } from '../model.js';
import { readCriuImages } from './read.js';
import { criuToCheckpoint, type ImportMeta } from './import.js';
import { dirSource, DEFAULT_CRIU_LIMITS, type CriuReadLimits } from './source.js';

export { readCriuImages, type CriuDump } from './read.js';
export { criuToCheckpoint, type ImportMeta } from './import.js';
export { dirSource, memorySource, DEFAULT_CRIU_LIMITS, type CriuImageSource, type CriuReadLimits } from './source.js';

/** A directory `criu dump -D DIR` wrote → Checkpoint (method 'criu'). Throws ImageError. */
export function importCriuDirectory(dir: string, opts: { limits?: CriuReadLimits; now?: () => Date } = {}): Checkpoint {
  const dump = readCriuImages(dirSource(dir, opts.limits ?? DEFAULT_CRIU_LIMITS), opts.limits ?? DEFAULT_CRIU_LIMITS);
  return criuToCheckpoint(dump, {
    origin: { kind: 'criu-dir', path: path.resolve(dir), criuImgVersion: dump.imgVersion },
    ...(opts.now ? { now: opts.now } : {}),
  });
}
export { checkpointToCriuImages, writeCriuDirectory, ExportError } from './export.js';
