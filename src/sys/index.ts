export * from './errors.js';
export * from './libc.js';
export { ProcDir } from './procdir.js';
export { statxPath, AT_SYMLINK_NOFOLLOW, type StatxResult } from './statx.js';
