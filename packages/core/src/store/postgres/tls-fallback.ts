import type pg from 'pg';
import { PgClient } from './pg-client.js';
import { isSocketHost, queryParam } from './connection-url.js';

/**
 * libpq's two `sslmode`s that try one way to connect and then the other: `prefer` (psql's default,
 * and common in the URLs people copy) tries TLS and falls back to an unencrypted connection when the
 * server has no TLS; `allow` tries an unencrypted connection and falls back to TLS when the server
 * refuses it. pg tries one way only, so with either mode a server without TLS (Debian's with
 * `ssl = off`, the official Docker image's) refused every start: "The server does not support SSL
 * connections". Here one connection made as the store opens tries the first way, and the pool
 * goes the way that answered; `trial` holds that connection's settings of its own. A server that
 * changes its TLS later is followed at the next start. Neither mode checks the server's
 * certificate, in libpq as here: they do not promise encryption.
 */
export async function settleTls(url: string, config: pg.ClientConfig, trial: Pick<pg.ClientConfig, 'application_name' | 'connectionTimeoutMillis'>): Promise<pg.ClientConfig> {
  const mode = queryParam(url, 'sslmode');
  // Over a local socket there is no TLS to try (postgresConnection left it out).
  if ((mode !== 'prefer' && mode !== 'allow') || isSocketHost(config.host)) return config;
  const tls = { ...(typeof config.ssl === 'object' ? config.ssl : {}), rejectUnauthorized: false };
  const [first, second]: [pg.ClientConfig, pg.ClientConfig] =
    mode === 'prefer'
      ? [
          { ...config, ssl: tls },
          { ...config, ssl: false },
        ]
      : [
          { ...config, ssl: false },
          { ...config, ssl: tls },
        ];
  // `trial` names the connection and bounds its wait (a server that accepts and never answers).
  const client = new PgClient({ ...trial, ...first });
  try {
    await client.connect();
    return first;
  } catch (err) {
    if (mode === 'prefer' ? noTls(err) : tlsRequired(err)) return second;
    throw err;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The server answered TLS's first message with no (pg's words for PostgreSQL's 'N'). */
function noTls(err: unknown): boolean {
  return err instanceof Error && err.message === 'The server does not support SSL connections';
}

/** pg_hba.conf has only `hostssl` lines for this client: PostgreSQL ends the startup with 28000, `no encryption`. */
function tlsRequired(err: unknown): boolean {
  return (err as { code?: string }).code === '28000' && /no encryption/.test((err as Error).message);
}
