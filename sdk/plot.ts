/**
 * Line plots written as PNG, for loss curves and error-versus-rounds figures. Rendering is
 * matplotlib's, in the runtime's Python (`python -m liaison_runtime.plot`), so the SDK
 * needs no native canvas; the data stays in TypeScript.
 */
import { spawn } from 'node:child_process';
import { LiaisonError, resolvePython, runtimeEnv } from '../bridge/index.js';

export interface Series {
  label: string;
  y: readonly number[];
  /** Defaults to 0, 1, 2, … */
  x?: readonly number[];
  /** A matplotlib format string: '-', '--', 'o-', … */
  style?: string;
  /** Which panel, when `panels` has several. */
  panel?: number;
}

export interface PlotSpec {
  /** Where the PNG goes. */
  path: string;
  series: Series[];
  title?: string;
  xlabel?: string;
  ylabel?: string;
  logx?: boolean;
  logy?: boolean;
  /** x decreasing to the right (e.g. the fraction of weights left, from 100% down). */
  invertx?: boolean;
  /** Titles of side-by-side panels (default: one panel titled `title`). */
  panels?: string[];
}

/** Write the plot; resolves with its path. */
export function plotLines(spec: PlotSpec, opts: { python?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(opts.python ?? resolvePython(), ['-m', 'liaison_runtime.plot'], { env: runtimeEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', (e) => reject(new LiaisonError('E_SPAWN', `cannot run the plotter: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(out.trim() || spec.path);
      else reject(new LiaisonError('E_ARG', `plot ${spec.path} failed: ${err.trim().split('\n').pop() ?? `exit ${code}`}`));
    });
    child.stdin.end(JSON.stringify(spec));
  });
}
