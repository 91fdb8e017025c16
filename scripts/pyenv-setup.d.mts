// Types of pyenv-setup.mjs, for the tests that check its decisions.
export declare const RUNTIME_MODULES: string[];
export declare const EXTRA_MODULES: Record<string, string>;
export type SetupPlan =
  | { kind: 'skip'; reason: string }
  | { kind: 'given'; python: string }
  | { kind: 'shared'; extras: string[] }
  | { kind: 'dev'; venv: string };
export declare function planSetup(root: string, env?: NodeJS.ProcessEnv): SetupPlan;
export declare function parseExtras(text: string): string[];
export declare function runtimeRequirements(pyprojectText: string, extras?: string[]): string[];
export declare function acquireLock(
  path: string,
  opts?: { staleMs?: number; pollMs?: number; onWait?: (owner: { pid: number; host: string; since: number } | null) => void },
): Promise<() => void>;
