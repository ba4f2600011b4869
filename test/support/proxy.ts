// A TCP proxy between sluice and PostgreSQL that can freeze its open connections (a half-open
// link: nothing arrives, nothing is closed) or cut them, and send new ones elsewhere (a service
// address that moves to the new primary). New connections still pass.
import net from 'node:net';

export class FaultyProxy {
  private server: net.Server;
  private pairs = new Set<{ client: net.Socket; upstream: net.Socket; frozen: boolean }>();
  port = 0;

  constructor(private targetPort: number, private readonly targetHost = '127.0.0.1') {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, this.targetHost);
      const pair = { client, upstream, frozen: false };
      this.pairs.add(pair);
      const forward = (from: net.Socket, to: net.Socket) =>
        from.on('data', (d) => {
          if (!pair.frozen) to.write(d);
        });
      forward(client, upstream);
      forward(upstream, client);
      const close = () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  url(database = 'postgres', user = 'postgres'): string {
    return `postgres://${user}@127.0.0.1:${this.port}/${database}`;
  }

  /** Every open connection stops passing data both ways, and stays open. */
  freeze(): number {
    for (const p of this.pairs) p.frozen = true;
    return this.pairs.size;
  }

  /** New connections go to `port` from now on (a failover behind a fixed address); open ones stay. */
  retarget(port: number): void {
    this.targetPort = port;
  }

  /** Every open connection is closed. */
  cut(): void {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
