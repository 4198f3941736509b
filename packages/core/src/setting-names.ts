import { SETTINGS, type SettingName, type SettingSpec } from './settings.js';

/**
 * Names set in `.env` or the environment that no setting has, where one close to it is unset: a
 * misspelling (OPENAI_APIKEY), or another tool's name for it (OPENAI_API_BASE, the old OpenAI SDKs'),
 * which the programs would otherwise ignore without a word, running on the default or stopping with
 * "OPENAI_API_KEY is not set" beside the line that sets it. Also what Node reads only from the
 * environment it starts in, when `.env` sets it. Only a name whose setting is unset is told of: the
 * environment holds other programs' variables too, and one whose setting is set is theirs.
 */
export interface NameNote {
  /** The name set, and where. */
  name: string;
  where: '.env' | 'the environment';
  /** The setting meant, or null for a name Node alone reads. */
  meant: SettingName | null;
  /** One line for the start's log. */
  line: string;
}

// Other tools' names for a setting: the OpenAI SDKs' and LangChain's.
// Maps, not objects: a name from .env is any text, and an object answers toString and constructor.
const OTHER_TOOLS = new Map<string, SettingName>([
  ['OPENAI_API_BASE', 'OPENAI_BASE_URL'],
  ['OPENAI_API_BASE_URL', 'OPENAI_BASE_URL'],
  ['OPENAI_API_HOST', 'OPENAI_BASE_URL'],
  ['OPENAI_BASE', 'OPENAI_BASE_URL'],
  ['OPENAI_KEY', 'OPENAI_API_KEY'],
  ['OPENAI_TOKEN', 'OPENAI_API_KEY'],
  ['OPENAI_MODEL', 'DEFAULT_MODEL'],
  ['OPENAI_TIMEOUT', 'UPSTREAM_TIMEOUT_SECONDS'],
]);

// Read by Node itself, at its start, from its own environment: never from a file it reads later.
const NODE_ONLY = new Map<string, string>([
  ['NODE_EXTRA_CA_CERTS', 'name the file in UPSTREAM_CA_FILE instead'],
  ['NODE_OPTIONS', "set it in the service's environment (Environment= in its unit)"],
  ['NODE_TLS_REJECT_UNAUTHORIZED', "name the upstream's CA in UPSTREAM_CA_FILE instead"],
]);

const NAMES = Object.keys(SETTINGS) as SettingName[];
const KNOWN = new Set<string>([...NAMES, ...NAMES.filter((n) => (SETTINGS[n] as SettingSpec).lowercase).map((n) => n.toLowerCase())]);

/** What each name no setting has seems to mean; `isSet` says whether a setting has a value. */
export function settingNameNotes(fromEnv: Iterable<string>, fromFile: Iterable<string>, isSet: (name: SettingName) => boolean): NameNote[] {
  const notes: NameNote[] = [];
  const fileNames = new Set(fromFile);
  for (const name of fileNames) {
    const nodeOnly = NODE_ONLY.get(name);
    if (nodeOnly)
      notes.push({ name, where: '.env', meant: null, line: `.env sets ${name}, which Node reads only from the environment it starts in, never from .env: ${nodeOnly}` });
  }
  const seen = new Set<string>();
  for (const [where, names] of [
    ['.env', fileNames],
    ['the environment', fromEnv],
  ] as const) {
    for (const name of names) {
      if (KNOWN.has(name) || seen.has(name)) continue;
      const meant = meantSetting(name);
      if (!meant || isSet(meant)) continue;
      seen.add(name);
      notes.push({ name, where, meant, line: `${where} sets ${name}, which is no setting of this program, and ${meant} is unset: ${name} is ignored (was ${meant} meant?)` });
    }
  }
  return notes;
}

/** The setting a name seems to mean: another tool's name for it, or one a letter or two away. */
function meantSetting(name: string): SettingName | null {
  const upper = name.toUpperCase();
  const alias = OTHER_TOOLS.get(upper);
  if (alias) return alias;
  // A setting's name in the wrong case (port=8080).
  if (Object.hasOwn(SETTINGS, upper)) return upper as SettingName;
  const squashed = upper.replace(/_/g, '');
  let best: SettingName | null = null;
  let bestDistance = Infinity;
  for (const setting of NAMES) {
    // The same start: PATH is not PORT misspelt, nor HOME HOST.
    if (setting.slice(0, 3) !== upper.slice(0, 3)) continue;
    if (setting.replace(/_/g, '') === squashed) return setting;
    const allowed = setting.length >= 8 ? 2 : 1;
    const distance = editDistance(upper, setting, allowed);
    if (distance <= allowed && distance < bestDistance) {
      best = setting;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance, given up (returning limit + 1) once it must exceed `limit`. */
export function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const value = Math.min((previous[j] as number) + 1, (row[j - 1] as number) + 1, (previous[j - 1] as number) + cost);
      row.push(value);
      rowMin = Math.min(rowMin, value);
    }
    if (rowMin > limit) return limit + 1;
    previous = row;
  }
  return previous[b.length] as number;
}
