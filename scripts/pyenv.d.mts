// Types of pyenv.mjs for bridge/launcher.ts, which imports it (tsup bundles the code).
export declare const POINTER_FILE: string;
export declare function torchSpec(env?: NodeJS.ProcessEnv): string;
export declare function isDependencyInstall(root: string): boolean;
export declare function liaisonHome(env?: NodeJS.ProcessEnv): string;
export declare function torchTag(spec: string): string;
export declare function sharedVenvDir(o: { home: string; version: string; pyVersion: string; torch: string }): string;
export declare function venvPython(venv: string): string;
export declare function packageVersion(root: string): string;
export declare function recordedVenv(root: string): string | null;
export declare function locatePython(root: string, env?: NodeJS.ProcessEnv): { python: string; found: boolean; fix: string };
export declare const ROOT: string;
export declare const RUNTIME_DIR: string;
export declare function pythonPath(env?: NodeJS.ProcessEnv): string | null;
