/**
 * An error body that is not JSON, as a line of text for the job's error. A proxy or CDN in front
 * of the model answers its own failures with a web page (nginx's "502 Bad Gateway", a CDN's 524),
 * and the job's error was the page's first 500 characters of markup over several lines, which
 * `proxy-worker jobs` cut into a broken table. A page is told by its title, then its body's text,
 * with scripts, styles and tags left out and the common character references read; any text is put
 * on one line.
 *
 * Each step is one pass (indexOf, or a pattern that cannot scan a character twice), since the page
 * comes from whatever answers at the upstream's address; and only its first PAGE_READ_CHARS are
 * read, as the message keeps 500.
 */
export function pageText(text: string, contentType: string | string[] | undefined): string {
  const start = text.slice(0, PAGE_READ_CHARS);
  if (!isPage(start, contentType)) return oneLine(start);
  const lower = start.toLowerCase();
  const title = oneLine(readReferences(stripTags(elementText(start, lower, 'title'))));
  const bodyAt = lower.indexOf('<body');
  const body = oneLine(readReferences(stripTags(dropElements(bodyAt < 0 ? start : start.slice(bodyAt), bodyAt < 0 ? lower : lower.slice(bodyAt)))));
  if (!title) return body;
  return body.startsWith(title) ? body : `${title}${body ? `: ${body}` : ''}`;
}

const PAGE_READ_CHARS = 64 * 1024;

function isPage(text: string, contentType: string | string[] | undefined): boolean {
  return /html/i.test(String(contentType ?? '')) || /^\s*<(!doctype html|html)\b/i.test(text);
}

/** What the first `<name …>…</name>` holds; empty when there is none. */
function elementText(html: string, lower: string, name: string): string {
  const open = lower.indexOf(`<${name}`);
  const from = open < 0 ? -1 : html.indexOf('>', open);
  const close = from < 0 ? -1 : lower.indexOf(`</${name}`, from);
  return close < 0 ? '' : html.slice(from + 1, close);
}

/** The page without its scripts, styles and head: their text is no reader's. */
function dropElements(html: string, lower: string): string {
  const opening = /<(script|style|head)\b/g;
  let kept = '';
  let at = 0;
  for (let found = opening.exec(lower); found; found = opening.exec(lower)) {
    kept += `${html.slice(at, found.index)} `;
    const close = lower.indexOf(`</${found[1]}`, opening.lastIndex);
    const end = close < 0 ? -1 : lower.indexOf('>', close);
    at = end < 0 ? html.length : end + 1;
    opening.lastIndex = at;
  }
  return kept + html.slice(at);
}

/** Tags (comments among them) as spaces; `[^<>]` keeps each try from running past the next `<`. */
function stripTags(html: string): string {
  return html.replace(/<[^<>]*>/g, ' ');
}

// A map, not an object: no name a page writes can reach an object's inherited members.
const NAMED = new Map([
  ['amp', '&'],
  ['lt', '<'],
  ['gt', '>'],
  ['quot', '"'],
  ['apos', "'"],
  ['nbsp', ' '],
]);

function readReferences(text: string): string {
  return text.replace(/&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|[a-z]{2,6});/gi, (whole, ref: string) => {
    if (ref[0] !== '#') return NAMED.get(ref.toLowerCase()) ?? whole;
    const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}
