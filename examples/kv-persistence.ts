/**
 * The persistence of importance (Liu et al., "Scissorhands", NeurIPS 2023, §3,
 * https://arxiv.org/abs/2305.17118), measured on a model's own attention.
 *
 * A token j is important to the query at position t when its attention weight exceeds
 * 1/(t + 1), what it would get if the query's attention were spread evenly over the t + 1
 * tokens it sees (the paper's "above average" threshold). The persistence ratio at lag k is
 * the fraction of the (query t, token j) pairs with j important at t where j is still
 * important at t + k, pooled over queries, windows and heads, per layer. It is set against
 * the base rate: the fraction of the tokens j <= t important at t + k whatever they were at
 * t — what the ratio would be if importance at t said nothing about importance later.
 * Scissorhands keeps the tokens that were often important because the hypothesis says the
 * ratio is far above the base rate.
 *
 * The attention comes from `Model.attentionWeights` (the runtime's `attention_weights`
 * op): every layer's causal softmax attention of a plain forward, (L, B, H, T, T). The
 * counting stays in the runtime; only 3L numbers per window and lag come back.
 */
import type { Model } from '../sdk/index.js';

export interface Persistence {
  /** The lags, as asked. */
  lags: number[];
  /** ratio[i][l]: the persistence ratio at lags[i] in layer l. */
  ratio: number[][];
  /** base[i][l]: the base rate at lags[i] in layer l. */
  base: number[][];
  /** Important (query, token) pairs per query, averaged over queries from `from` on, per layer. */
  importantPerQuery: number[];
}

/**
 * The persistence ratios of `model` on `rows` (held-out token windows of one length T) at
 * `lags`, counting queries t >= `from` (the first queries see too few tokens for "above
 * average" to mean much). One window at a time: the attention of all layers of one
 * T = 1024 window is already L × H × 4 MiB.
 */
export async function persistence(model: Model, rows: readonly number[][], lags: readonly number[], opts: { from: number; onWindow?: (done: number) => void }): Promise<Persistence> {
  const rt = model.rt;
  const T = rows[0].length;
  const from = opts.from;
  for (const k of lags) {
    if (!Number.isInteger(k) || k < 1 || from + k >= T) throw new Error(`lag ${k} leaves no query pair in windows of ${T} tokens from query ${from}`);
  }
  let layers = 0;
  const both = lags.map(() => [] as number[]);
  const imp = lags.map(() => [] as number[]);
  const later = lags.map(() => [] as number[]);
  const seen = lags.map(() => 0); // (query, earlier-token) pairs the base rate counts per layer and head
  let perQuery: number[] = [];
  let heads = 0;
  const add = (acc: number[], xs: number[]) => xs.forEach((x, l) => { acc[l] = (acc[l] ?? 0) + x; });
  for (const [w, row] of rows.entries()) {
    await rt.scope(async () => {
      const x = rt.tensor(row, [1, T], 'i64');
      const attn = model.attentionWeights(x); // (L, 1, H, T, T)
      const shape = (await attn.info()).shape as number[];
      [layers, , heads] = shape;
      const thr = rt.tensor(Array.from({ length: T }, (_, t) => 1 / (t + 1)), [T, 1]); // row t's even share
      const important = attn.gt(thr).to('f32'); // (L, 1, H, T, T); above the diagonal attention is 0
      const counts = important.narrow(3, from, T - from).sum([1, 2, 3, 4]); // (L)
      const got: number[][][] = [];
      for (const k of lags) {
        // one lag at a time, its temporaries freed at once: each is the size of the attention
        got.push(await rt.scope(async () => {
          const n = T - k - from; // queries t = from .. T-k-1, each paired with t + k
          const now = important.narrow(3, from, n); // (L, 1, H, n, T)
          const then = important.narrow(3, from + k, n);
          // the tokens query t could see: columns j <= t, i.e. j <= row + from
          const earlier = rt.ones([n, T]).tril(from);
          const sums = rt.stack([now.mul(then).sum([1, 2, 3, 4]), now.sum([1, 2, 3, 4]), then.mul(earlier).sum([1, 2, 3, 4])]); // (3, L)
          return (await sums.tolist()) as number[][];
        }));
      }
      got.forEach(([b, i, l], j) => {
        add(both[j], b);
        add(imp[j], i);
        add(later[j], l);
        const n = T - lags[j] - from;
        seen[j] += heads * (n * from + (n * (n + 1)) / 2); // Σ over t = from..from+n-1 of (t + 1)
      });
      perQuery = perQuery.length ? perQuery : new Array(layers).fill(0);
      add(perQuery, ((await counts.tolist()) as number[]).map((c) => c / (heads * (T - from))));
    });
    opts.onWindow?.(w + 1);
  }
  return {
    lags: [...lags],
    ratio: lags.map((_, j) => both[j].map((b, l) => b / imp[j][l])),
    base: lags.map((_, j) => later[j].map((x) => x / seen[j])),
    importantPerQuery: perQuery.map((c) => c / rows.length),
  };
}
