/**
 * Text bound for UTF-8 (a database's text column, a line cut to length). JavaScript strings are
 * UTF-16 and may hold half of a surrogate pair, which UTF-8 has no way to write: SQLite stored the
 * bytes of none (read back as three U+FFFD), PostgreSQL's driver wrote one U+FFFD. A cut made by
 * `.slice` through an emoji made one.
 */

/** `text` with each half of a pair standing alone written U+FFFD, as UTF-8 writers do. */
export function wellFormed(text: string): string {
  return text.isWellFormed() ? text : text.toWellFormed();
}

/** At most `max` UTF-16 units of `text`, cut before a pair rather than through it; well-formed. */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return wellFormed(text);
  const last = text.charCodeAt(max - 1);
  return wellFormed(text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max));
}
