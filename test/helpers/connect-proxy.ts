import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { TestHooks } from './index.ts';

/** An HTTP proxy (over TLS when given a key and certificate) that opens CONNECT tunnels, as squid does, and notes each: the target and its credentials. */
export async function startConnectProxy(t: TestHooks, password: string, tls?: { key: string | Buffer; cert: string | Buffer }) {
  const tunnels: Array<{ target: string; authorization: string | undefined }> = [];
  const sockets = new Set<Socket>();
  const refuse = (_req: unknown, res: { writeHead(status: number): { end(): void } }) => res.writeHead(405).end();
  const server = tls ? createTlsServer(tls, refuse) : createServer(refuse);
  server.on('connect', (req, client: Socket, head: Buffer) => {
    sockets.add(client);
    const authorization = req.headers['proxy-authorization'];
    tunnels.push({ target: req.url ?? '', authorization });
    if (authorization !== `Basic ${Buffer.from(`bob:${password}`).toString('base64')}`) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n');
      return;
    }
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client).pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { url: `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`, tunnels };
}
