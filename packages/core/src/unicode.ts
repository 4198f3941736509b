/**
 * Text bound for UTF-8 (a database's text column, a line cut to length), or for a terminal
 * (printable). JavaScript strings are
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

/**
 * C0 controls, DEL and C1 controls: what a terminal may take as an instruction. And Unicode's
 * bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069): a terminal that
 * lays out right-to-left text (GNOME Terminal, Konsole) shows what follows one reordered, so a
 * message can read as other than it is (the "Trojan Source" trick, CVE-2021-42574).
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHARACTERS = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
/** What JSON.stringify leaves of CONTROL_CHARACTERS: it escapes C0 controls itself. */
const LEFT_BY_JSON = /[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from outside (an upstream's error message, a header's value) as a terminal may be given it:
 * each control character written as a \u escape (ESC as \u001b). Printed as it came, an upstream's
 * message drove the operator's terminal: `proxy-worker jobs` sent its ESC sequences (colours, the
 * window's title; others clear the screen or move the cursor over what was printed) as they were.
 * The admin commands' human forms and the text log lines are written through it.
 */
export function printable(text: string): string {
  return text.replace(CONTROL_CHARACTERS, escaped);
}

/** JSON as printable: JSON.stringify writes C0 controls as escapes itself, but DEL, C1 and the bidirectional controls as they are. */
export function printableJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(LEFT_BY_JSON, escaped);
}

function escaped(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}
