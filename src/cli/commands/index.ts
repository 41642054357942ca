/**
 * The subcommand table. Modules are loaded lazily so that, for example, the restore shim
 * never pays for loading the Kubernetes client.
 */
export interface Command {
  run(argv: string[]): Promise<number>;
}
export interface CommandEntry {
  summary: string;
  load(): Promise<Command>;
}

export const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  webhook: { summary: 'mutating admission webhook that wraps restore pods with the restore shim', load: () => import('./webhook.js') },
};
