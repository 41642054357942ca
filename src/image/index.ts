/** Checkpoint images: the model, the on-disk encoding, and its errors. */
export * from './model.js';
export * from './errors.js';
export { writeCheckpoint, readCheckpoint, lockLen, type SyncAll } from './checkpoint.js';
export { FORMAT_VERSION, FORMAT_NAME, MANIFEST, FILELOCKS_IMG, FILES_IMG, fdinfoImageName, type Manifest } from './manifest.js';
export { MAGIC } from './proto.js';
