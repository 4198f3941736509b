/**
 * For a line about something that may happen many times a second (an outage met by every request,
 * a shortage met by every call): the returned function says it through `say` at most once every
 * `everyMs`, with how many times it happened since it was last said, this time included.
 */
export function sayAtMostEvery(everyMs: number, now: () => number): (say: (times: number) => void) => void {
  let saidAt = -Infinity;
  let times = 0;
  return (say) => {
    times += 1;
    const at = now();
    if (at - saidAt < everyMs) return;
    say(times);
    saidAt = at;
    times = 0;
  };
}
