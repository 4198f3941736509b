import type { ClientConfig } from 'pg';
import { parse, toClientConfig } from 'pg-connection-string';

/**
 * A PostgreSQL URL read into pg's connection settings, its `sslmode` as libpq (and so psql, and the
 * providers that hand out such URLs) reads it: `require` encrypts without checking the server's
 * certificate, `verify-ca` checks it against `sslrootcert`, `verify-full` against the CA and the
 * host name. pg 8 reads `require` as `verify-full` and prints a nine-line warning at every start
 * that it will read it as libpq does from pg 9; a provider's self-signed certificate (Heroku's) or
 * a CA outside Node's list (Amazon RDS's) then failed every connection. A URL that says
 * `uselibpqcompat` itself is read as it says.
 *
 * Throws what pg-connection-string throws: a URL it cannot read, a certificate file that cannot be
 * read (`code` set), `verify-ca` without `sslrootcert`.
 */
export function postgresConnection(url: string): ClientConfig {
  const ownChoice = /[?&]uselibpqcompat=/i.test(url);
  return toClientConfig(parse(url, ownChoice ? {} : { useLibpqCompat: true }));
}
