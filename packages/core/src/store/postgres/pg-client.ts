import type { EventEmitter } from 'node:events';
import { TLSSocket } from 'node:tls';
import pg from 'pg';
import { readRequireAuth, type AuthMethod } from './connection-url.js';

const BOUND_MECHANISM = 'SCRAM-SHA-256-PLUS';
// After libpq's words, the parameter that asked for them.
const BINDING = ' (channel_binding=require)';

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
 * pg's Client, holding its connections to what libpq's `channel_binding=require` and `require_auth`
 * ask of the server's authentication, which pg reads nothing of; each refusal in libpq's words.
 *
 * `channel_binding=require`: the server must prove, through SCRAM-SHA-256-PLUS, that it holds the
 * certificate the client's TLS saw, so a man in the middle with a certificate of his own (which
 * `sslmode=require` takes) is found out; with pg a connection had gone through such a relay, and
 * given a server asking for the password in clear the password. pg itself uses the binding wherever
 * the server offers it (`enableChannelBinding`, which postgresConnection sets unless `disable`).
 *
 * `require_auth` (libpq 16's): the methods the server may authenticate the client by, or those it
 * may not (`!md5`), `none` standing for letting it in unasked.
 *
 * As libpq, a server asking for the password (in clear or MD5) where that is refused hears nothing
 * of it, a SCRAM is refused before the exchange begins, and one that lets the client in unasked
 * (trust, cert) before the first statement.
 */
export class PgClient extends pg.Client {
  private readonly bindingRequired: boolean;
  private readonly requireAuth: { value: string; allows: (method: AuthMethod) => boolean } | null;
  /** The method the server asked the client to authenticate by, once it has. */
  private asked: AuthMethod | null = null;
  private bound = false;

  constructor(config: pg.ClientConfig & { channel_binding?: string; require_auth?: string } = {}) {
    super(config);
    this.bindingRequired = config.channel_binding === 'require';
    // A value libpq refuses is refused at start (database-url.ts), and has no say here.
    const requireAuth = config.require_auth ? readRequireAuth(config.require_auth) : null;
    this.requireAuth = requireAuth && typeof requireAuth === 'object' ? { value: config.require_auth as string, allows: requireAuth.allows } : null;
    // pg's handler runs after every statement: only a connection with something to check at its
    // first steps in (pg binds the handler when it connects, so this one's own is the one bound).
    if (this.bindingRequired || this.requireAuth) this.internals._handleReadyForQuery = (msg) => this.checkAuthenticated(msg);
  }

  _handleAuthCleartextPassword(msg: unknown): void {
    if (this.deny('password', 'a cleartext password')) return;
    base._handleAuthCleartextPassword.call(this, msg);
  }

  _handleAuthMD5Password(msg: unknown): void {
    if (this.deny('md5', 'a hashed password')) return;
    base._handleAuthMD5Password.call(this, msg);
  }

  _handleAuthSASL(msg: { mechanisms: string[] }): void {
    if (this.deny('scram-sha-256', 'SASL authentication')) return;
    if (this.bindingRequired) {
      if (!(this.internals.connection.stream instanceof TLSSocket)) return this.refuse(`channel binding required, but SSL not in use${BINDING}`);
      if (!msg.mechanisms.includes(BOUND_MECHANISM)) {
        return this.refuse(`channel binding is required, but server did not offer an authentication method that supports channel binding${BINDING}`);
      }
      // pg takes the bound mechanism wherever the server offers it and the connection is TLS.
      this.bound = true;
    }
    base._handleAuthSASL.call(this, msg);
  }

  /** pg's handler of ReadyForQuery, refusing first a connection the server let in otherwise than channel_binding or require_auth asks. */
  private checkAuthenticated(msg: unknown): void {
    if (this.internals._connecting) {
      if (this.asked === null && this.requireAuth && !this.requireAuth.allows('none')) {
        return this.refuse(`authentication method requirement "${this.requireAuth.value}" failed: server did not complete authentication`);
      }
      if (this.bindingRequired && !this.bound) return this.refuse(`channel binding required, but server authenticated client without channel binding${BINDING}`);
    }
    base._handleReadyForQuery.call(this, msg);
  }

  /**
   * Notes the method the server asks for, and refuses the connection (true) where require_auth, or
   * channel_binding=require for a password, does not let it be used.
   */
  private deny(method: AuthMethod, asked: string): boolean {
    this.asked = method;
    if (this.requireAuth && !this.requireAuth.allows(method)) {
      this.refuse(`authentication method requirement "${this.requireAuth.value}" failed: server requested ${asked}`);
      return true;
    }
    if (this.bindingRequired && method !== 'scram-sha-256') {
      this.refuse(`channel binding required but not supported by server's authentication request${BINDING}`);
      return true;
    }
    return false;
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
    // PostgreSQL's code for a login refused, which these are on the client's side.
    connection.emit('error', Object.assign(new Error(reason), { code: '28000' }));
    (connection.stream as { destroy(): void }).destroy();
  }
}
