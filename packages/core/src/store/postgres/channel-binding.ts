import type { EventEmitter } from 'node:events';
import { TLSSocket } from 'node:tls';
import pg from 'pg';

const BOUND_MECHANISM = 'SCRAM-SHA-256-PLUS';

// The parts of pg's Client this one steps into: the handlers of the server's authentication
// requests, which pg's Client binds to its connection's events as it connects.
interface ClientInternals {
  connection: EventEmitter & { stream: unknown };
  _connecting: boolean;
  _handleAuthCleartextPassword(msg: unknown): void;
  _handleAuthMD5Password(msg: unknown): void;
  _handleAuthSASL(msg: { mechanisms: string[] }): void;
  _handleReadyForQuery(msg: unknown): void;
}

const base = pg.Client.prototype as unknown as ClientInternals;

/**
 * pg's Client, holding its connection to libpq's `channel_binding=require`: the server must prove,
 * through SCRAM-SHA-256-PLUS, that it holds the certificate the client's TLS saw, so a man in the
 * middle with a certificate of his own (which `sslmode=require` takes) is found out. pg reads
 * nothing of the parameter, and with it a connection had gone through such a relay, and given a
 * server asking for the password in clear the password. As libpq, a server that asks for the
 * password (in clear or MD5) is refused before it is sent, a SCRAM without the binding before the
 * exchange begins, and one that lets the client in without a password (trust, cert) before the
 * first statement; each in libpq's words. pg itself uses the binding wherever the server offers it
 * (`enableChannelBinding`, which postgresConnection sets for `prefer` and `require`).
 */
export class PgClient extends pg.Client {
  private readonly bindingRequired: boolean;
  private bound = false;

  constructor(config: pg.ClientConfig & { channel_binding?: string } = {}) {
    super(config);
    this.bindingRequired = config.channel_binding === 'require';
  }

  _handleAuthCleartextPassword(msg: unknown): void {
    if (this.bindingRequired) return this.refuse("channel binding required but not supported by server's authentication request");
    base._handleAuthCleartextPassword.call(this, msg);
  }

  _handleAuthMD5Password(msg: unknown): void {
    if (this.bindingRequired) return this.refuse("channel binding required but not supported by server's authentication request");
    base._handleAuthMD5Password.call(this, msg);
  }

  _handleAuthSASL(msg: { mechanisms: string[] }): void {
    if (this.bindingRequired) {
      if (!(this.internals.connection.stream instanceof TLSSocket)) return this.refuse('channel binding required, but SSL not in use');
      if (!msg.mechanisms.includes(BOUND_MECHANISM)) {
        return this.refuse('channel binding is required, but server did not offer an authentication method that supports channel binding');
      }
      // pg takes the bound mechanism wherever the server offers it and the connection is TLS.
      this.bound = true;
    }
    base._handleAuthSASL.call(this, msg);
  }

  _handleReadyForQuery(msg: unknown): void {
    if (this.bindingRequired && this.internals._connecting && !this.bound) {
      return this.refuse('channel binding required, but server authenticated client without channel binding');
    }
    base._handleReadyForQuery.call(this, msg);
  }

  private get internals(): ClientInternals {
    return this as unknown as ClientInternals;
  }

  /**
   * Fails the connection being made, as a server's refusal would, and closes it: the server would
   * otherwise hold it open for the password it asked for (authentication_timeout, a minute).
   */
  private refuse(reason: string): void {
    const { connection } = this.internals;
    connection.emit('error', new Error(`${reason} (channel_binding=require)`));
    (connection.stream as { destroy(): void }).destroy();
  }
}
