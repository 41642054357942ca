export * from './errors.js';
export * from './libc.js';
