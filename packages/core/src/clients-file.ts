import type { ValidateFunction } from 'ajv';
import type { ClientIdentity } from './config.js';
import { parseRate } from './rate-spec.js';
import { ConfigError } from './errors.js';
import { jsonErrorPlace, readTextFile, readTextFileLater } from './text-file.js';
import { ajvProblem } from './ajv-message.js';
import { clientsFileSchema, type ClientsFileEntry } from './schemas.js';
import { validate as compiledClientsValidator } from './generated/validate-clients-file.js';

const CLIENT_FIELDS = Object.keys(clientsFileSchema.items.properties).join(', ');

// Compiled ahead from clientsFileSchema (scripts/generate-validators.ts).
const validate = compiledClientsValidator as ValidateFunction<ClientsFileEntry[]>;

/** Reads and validates the clients file; throws ConfigError with one line saying what to fix (never a secret). */
export function loadClientsFile(path: string): ClientIdentity[] {
  let text: string;
  try {
    text = readTextFile(path);
  } catch (err) {
    throw unreadable(path, err);
  }
  return parseClientsFile(text, path);
}

function unreadable(path: string, err: unknown): ConfigError {
  // A system error by its code (ENOENT, EACCES); a pipe no program wrote, in words.
  return new ConfigError(`PROXY_CLIENTS_FILE cannot be read (${path}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
}

function parseClientsFile(text: string, path: string): ClientIdentity[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`PROXY_CLIENTS_FILE is not valid JSON${jsonErrorPlace(text, err)} (${path})`);
  }
  if (!validate(parsed)) {
    const err = validate.errors?.[0];
    const where = err?.instancePath.replace(/^\//, '').replace(/\//g, '.') || 'the file';
    if (err?.keyword === 'additionalProperties') {
      // Ajv says only "must NOT have additional properties": the mistyped name is the news.
      const extra = (err.params as { additionalProperty: string }).additionalProperty;
      throw new ConfigError(`PROXY_CLIENTS_FILE: ${where}.${extra} is not a known field (a client has ${CLIENT_FIELDS}) (${path})`);
    }
    const problem = err?.keyword === 'pattern' ? describePattern(where) : err?.schemaPath.includes('/anyOf/') ? 'needs secret or secrets' : err ? ajvProblem(err) : 'is invalid';
    throw new ConfigError(`PROXY_CLIENTS_FILE: ${where} ${problem} (${path})`);
  }
  return parsed.map((entry) => ({
    name: entry.name,
    key: entry.key,
    secrets: [...(entry.secret ? [entry.secret] : []), ...(entry.secrets ?? [])],
    ...(entry.rate_limit ? { rateLimit: parseRate(entry.rate_limit) } : {}),
  }));
}

function describePattern(where: string): string {
  if (where.endsWith('.name')) return 'must be 1 to 64 characters of A-Z a-z 0-9 . _ -';
  if (where.endsWith('.key')) return 'must be 16 to 256 printable characters';
  if (where.endsWith('.rate_limit')) return 'must look like 60/min, 5/s or 1000/h, or be off';
  return 'must be 32 to 512 printable characters';
}

/**
 * The clients after a SIGHUP: PROXY_KEY's client (always named "default", a name the file may not
 * use) plus the file read afresh. Rejects with ConfigError when the file is bad; the caller keeps
 * the old list. Read off the event loop: a file that is a named pipe (a secrets agent's) waits for
 * its writer, and read on the loop it held every request meanwhile.
 */
export async function reloadClients(current: readonly ClientIdentity[], path: string): Promise<ClientIdentity[]> {
  let text: string;
  try {
    text = await readTextFileLater(path);
  } catch (err) {
    throw unreadable(path, err);
  }
  const clients = mergeClients(
    current.filter((c) => c.name === 'default'),
    parseClientsFile(text, path),
  );
  // The start refuses a file that leaves no client; a reload to one would refuse every request.
  if (clients.length === 0) throw noClient(path);
  return clients;
}

/** The clients file lists none and PROXY_KEY gives none: every request would be refused. */
export function noClient(path: string): ConfigError {
  return new ConfigError(`PROXY_CLIENTS_FILE lists no client (${path}), and PROXY_KEY is not set: list a client in the file, or set PROXY_KEY and PROXY_SECRET`);
}

/**
 * The env client (PROXY_KEY) and the file's clients together; names and keys must be unique, since
 * a job belongs to a client by name and a key must identify exactly one client. No key may be a
 * secret: a key goes in the clear in every request's header (and may be logged by a proxy on the
 * way), so a secret equal to one signs nothing.
 */
export function mergeClients(envClients: readonly ClientIdentity[], fileClients: readonly ClientIdentity[]): ClientIdentity[] {
  const all = [...envClients, ...fileClients];
  const names = new Set<string>();
  const keys = new Set<string>();
  for (const c of all) {
    if (names.has(c.name)) throw new ConfigError(`PROXY_CLIENTS_FILE: client name ${JSON.stringify(c.name)} is used twice (PROXY_KEY's client is named "default")`);
    if (keys.has(c.key)) throw new ConfigError(`PROXY_CLIENTS_FILE: client ${JSON.stringify(c.name)} reuses another client's key`);
    names.add(c.name);
    keys.add(c.key);
  }
  // By a map: a file may list 10,000 clients, and a search of every list for each key is 10^8 looks.
  const ownerOf = new Map(all.flatMap((c) => c.secrets.map((s) => [s, c.name] as const)));
  for (const c of all) {
    const owner = ownerOf.get(c.key);
    if (owner !== undefined) {
      throw new ConfigError(
        `PROXY_CLIENTS_FILE: client ${JSON.stringify(c.name)}'s key is also a secret (client ${JSON.stringify(owner)}'s): a key travels in the clear with every request, so a secret must be none of the keys`,
      );
    }
  }
  return all;
}
