/**
 * Tensors made in the runtime (zeros, random, ranges, joins): each one op, written once
 * over `call`, so every implementation of the runtime contract — one process, or a group —
 * gets them by extending this class.
 */
import type { ArgOf } from './contract.js';
import type { DType } from './dtype.js';
import type { Tensor } from './tensor.js';

type Arg = ArgOf<Tensor>;

export abstract class TensorFactories {
  /** Queue any op of the runtime's op table; `outputs` results (a list when != 1). */
  abstract call(op: string, args?: readonly Arg[], kw?: Record<string, Arg>, outputs?: number): Tensor | Tensor[];

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor { return this.call('zeros', [shape], { dtype }) as Tensor; }
  ones(shape: readonly number[], dtype: DType = 'f32'): Tensor { return this.call('ones', [shape], { dtype }) as Tensor; }
  full(shape: readonly number[], value: number, dtype: DType = 'f32'): Tensor { return this.call('full', [shape, value], { dtype }) as Tensor; }
  /** `arange(end)` or `arange(start, end, step)`. */
  arange(start: number, end?: number, step = 1, dtype?: DType): Tensor { return this.call('arange', [start], { end, step, dtype }) as Tensor; }
  linspace(start: number, end: number, steps: number): Tensor { return this.call('linspace', [start, end, steps]) as Tensor; }
  eye(n: number, m?: number): Tensor { return this.call('eye', [n], { m }) as Tensor; }
  /** Uniform [0, 1). With `seed`, the same values every time; without, the session's stream. */
  rand(shape: readonly number[], opts: { seed?: number; dtype?: DType } = {}): Tensor { return this.call('rand', [shape], opts) as Tensor; }
  /** Standard normal. With `seed`, the same values every time; without, the session's stream. */
  randn(shape: readonly number[], opts: { seed?: number; dtype?: DType } = {}): Tensor { return this.call('randn', [shape], opts) as Tensor; }
  randint(low: number, high: number, shape: readonly number[], opts: { seed?: number } = {}): Tensor { return this.call('randint', [low, high, shape], opts) as Tensor; }
  /** Reseed the session's random stream. */
  manualSeed(seed: number): void { this.call('manual_seed', [seed], undefined, 0); }
  /** `cond ? a : b`, elementwise. */
  where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor { return this.call('where', [cond, a, b]) as Tensor; }
  cat(tensors: readonly Tensor[], dim = 0): Tensor { return this.call('cat', [tensors], { dim }) as Tensor; }
  stack(tensors: readonly Tensor[], dim = 0): Tensor { return this.call('stack', [tensors], { dim }) as Tensor; }
  /** `einsum('bij,bjk->bik', a, b)`. */
  einsum(equation: string, ...operands: Tensor[]): Tensor { return this.call('einsum', [equation, operands]) as Tensor; }
}
