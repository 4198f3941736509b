/**
 * A counter's labels as both stores keep them: JSON with sorted keys, so one label set is always
 * one row. (PostgreSQL's single-statement writes build the same text in SQL for {model, status}.)
 */
export function labelsJson(labels: Record<string, string>): string {
  const keys = Object.keys(labels);
  if (keys.length < 2) return JSON.stringify(labels);
  return JSON.stringify(Object.fromEntries(keys.sort().map((k) => [k, labels[k]])));
}
