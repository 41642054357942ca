/** Public surface of the LockCheckpoint API module (types, constants, validators). */
export * from './lockcheckpoint.js';
export * from './claim.js';
