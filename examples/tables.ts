/** Tables the examples print (plain text, columns padded) and write (GitHub markdown). */

/** A text table: columns padded, numbers right-aligned. */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[], opts: { right?: readonly boolean[] } = {}): string {
  const widths = header.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j].length)));
  // numbers (counts, ranges, speed-ups) right-aligned unless the caller says which columns are
  const right = opts.right ?? header.map((_, j) => rows.every((r) => /^[>\d\s.(–)×%-]*$/.test(r[j])));
  const line = (r: readonly string[]) => r.map((c, j) => (right[j] ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join('   ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** The same table as GitHub markdown. */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (r: readonly string[]) => `| ${r.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}
