/**
 * Same-node handover: OFD and flock locks move from a running source to its replacement
 * with no lock-free window (pidfd_getfd into a vault, SCM_RIGHTS to the authenticated
 * restore shim); POSIX locks are re-taken with F_SETLKW queued before the source stops.
 */
/** The vault (server side, runs in the agent or `lockmig handover`). */
export { Vault, checkpointFingerprint, type VaultOptions, type VaultEvents, type DepositOptions, type EntryStatus, type PeerInfo } from './vault.js';
/** The receiving side, used by the restore shim. */
export { receiveHandover, ReceivedHandover, HandoverRefused, HandoverFailed } from './client.js';
/** Who may receive: pluggable matchers over SO_PEERCRED + /proc/<pid>/cgroup. */
export { CgroupPathMatcher, PidMatcher, PodUidMatcher, NobodyMatcher, identifyPeer, PeerIdentityError, type TargetMatcher, type PeerIdentity, type MatchResult } from './auth.js';
/** Taking descriptions over from a running source. */
export { takeOverDescriptions, planTakeover, TakeoverError, DESCRIPTION_KINDS, type TakeoverPlan } from './takeover.js';
/** Wire format. */
export * as protocol from './protocol.js';
