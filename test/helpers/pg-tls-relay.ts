import { createServer, connect as connectTcp, type AddressInfo, type Socket } from 'node:net';
import { connect as connectTls, TLSSocket } from 'node:tls';
import type { TestHooks } from './index.ts';

// PostgreSQL's SSLRequest: length 8, then the request code 80877103.
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/**
 * A man in the middle of PostgreSQL's TLS, for tests: it answers the client's SSLRequest itself,
 * ends the client's TLS with a certificate of its own (which `sslmode=require` accepts, as it
 * checks none), opens TLS of its own to the server, and relays the two in plain text, keeping what
 * the client sent. What SCRAM's channel binding exists to stop: bound to the relay's certificate,
 * the client's proof fails at the server, which sees its own.
 */
export async function startTlsRelay(t: TestHooks, server: { host: string; port: number }, tls: { key: string | Buffer; cert: string | Buffer }) {
  const sent: Buffer[] = [];
  const sockets = new Set<Socket>();
  const relay = createServer((client) => {
    sockets.add(client);
    client.on('error', () => undefined);
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < SSL_REQUEST.length) return;
      client.off('data', onData);
      if (!head.subarray(0, SSL_REQUEST.length).equals(SSL_REQUEST)) return client.destroy();
      client.pause();
      client.write('S');
      const plainClient = new TLSSocket(client, { isServer: true, ...tls });
      const upstream = connectTcp(server.port, server.host, () => upstream.write(SSL_REQUEST));
      sockets.add(upstream);
      upstream.once('data', (answer: Buffer) => {
        if (answer[0] !== 0x53) return client.destroy();
        const plainServer = connectTls({ socket: upstream, rejectUnauthorized: false });
        plainClient.on('data', (data: Buffer) => {
          sent.push(data);
          plainServer.write(data);
        });
        plainServer.on('data', (data: Buffer) => plainClient.write(data));
        for (const [one, other] of [
          [plainClient, plainServer],
          [plainServer, plainClient],
        ] as const) {
          one.on('error', () => other.destroy());
          one.on('close', () => other.destroy());
        }
      });
      upstream.on('error', () => client.destroy());
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => relay.close(resolve));
  });
  return { port: (relay.address() as AddressInfo).port, sent: () => Buffer.concat(sent) };
}
