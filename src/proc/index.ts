/** /proc parsers: one file each, readonly records out, ProcParseError on unknown input. */
export * from './errors.js';
export * from './lockline.js';
export * from './locks.js';
export * from './fdinfo.js';
export * from './mountinfo.js';
export * from './status.js';
export * from './tree.js';
export * from './fds.js';
export * from './features.js';
export * from './live-locks.js';
