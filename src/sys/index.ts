export * from './errors.js';
export * from './libc.js';
export { ProcDir, type FdinfoBlock } from './procdir.js';
export { statxPath, statxAt, AT_SYMLINK_NOFOLLOW, type StatxResult } from './statx.js';
export {
  nativeLib, nativeLibProblem, findNativeLib, unshareFiles, resetIgnoredSignals, NATIVE_LIB_NAME,
  type NativeLib, type NativeLock, type WaitSet, type PlaceExecFailure,
} from './native.js';
