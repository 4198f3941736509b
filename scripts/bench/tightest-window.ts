/**
 * How close a paced stream of calls came to its budget: the shortest time any `n + 1` stamps in a
 * row of `sorted` (ascending) span, and the stamp that run begins at. With `n` stamps or fewer there
 * is no such run: the span is Infinity, from 0. Used by the soak and by the UPSTREAM_RPM test.
 */
export function tightestWindow(sorted: readonly number[], n: number): { span: number; from: number } {
  let span = Infinity;
  let from = 0;
  for (let i = 0; i + n < sorted.length; i++) {
    const here = (sorted[i + n] as number) - (sorted[i] as number);
    if (here < span) [span, from] = [here, sorted[i] as number];
  }
  return { span, from };
}
