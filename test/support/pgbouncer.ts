// Debian's pgbouncer (1.18) in transaction pool mode on a free loopback port, in front of a given
// PostgreSQL: for tests of sluice behind a transaction pooler, as many production setups run it.
//
// Settings it needs, and why:
// - auth_type = trust with an auth_file listing the roles: trust still requires the user name to be
//   in auth_file (`any` would log every client in as one configured user, hiding roles from tests).
// - ignore_startup_parameters: pgbouncer 1.18 refuses a client whose startup packet carries a
//   parameter it does not track ("unsupported startup parameter"). node-postgres sends `options`
//   (sluice puts its TCP keepalive settings there), `statement_timeout`, `lock_timeout` and
//   `idle_in_transaction_session_timeout` when configured; JDBC-style clients send
//   `extra_float_digits`. Ignored means dropped: through this pooler those settings do NOT reach
//   the server, which tests of sluice behind pgbouncer must keep in mind.
// What 1.18 does not do in transaction mode: named prepared statements live on one server
// connection, which other clients then share (a second client preparing the same name gets 42P05
// "already exists"; a client whose next transaction lands elsewhere gets 26000 "does not exist");
// session state (SET, LISTEN) stays on the server connection, not with the client.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort } from '../../src/embedded/cluster.js';
import { waitFor } from './db.js';
import { LoggedProcess, makeTempRoot, removeDir, track, untrack, type Topology } from './processes.js';
import { queryOnce } from './standby.js';
import { PGBOUNCER_BIN } from './tools.js';

export interface PgBouncerOptions {
  /** The PostgreSQL behind it. */
  targetPort: number;
  targetHost?: string;
  maxClientConn?: number;
  /** Server connections per database and user. */
  defaultPoolSize?: number;
  /** Roles that may log in (trust auth, no passwords). The first is the admin console user. */
  users?: string[];
  /** More [pgbouncer] settings, e.g. server_login_retry; they override the ones above. */
  settings?: Record<string, string | number>;
}

export class PgBouncer implements Topology {
  readonly logFile: string;
  private readonly configFile: string;
  private readonly adminUser: string;
  private proc: LoggedProcess | undefined;

  private constructor(readonly root: string, readonly port: number, opts: PgBouncerOptions) {
    this.logFile = path.join(root, 'pgbouncer.log');
    this.configFile = path.join(root, 'pgbouncer.ini');
    const users = opts.users ?? ['postgres'];
    this.adminUser = users[0];
    writeConfig(root, this.configFile, port, users, opts);
  }

  static async start(opts: PgBouncerOptions): Promise<PgBouncer> {
    const bouncer = new PgBouncer(makeTempRoot('pgbouncer'), await freePort(), opts);
    track(bouncer);
    try {
      await bouncer.start();
    } catch (err) {
      await bouncer.destroy();
      throw err;
    }
    return bouncer;
  }

  url(database = 'postgres', user = this.adminUser): string {
    return `postgres://${user}@127.0.0.1:${this.port}/${database}`;
  }

  /** The admin console (SHOW POOLS, SHOW SERVERS...): simple-protocol queries only. */
  adminUrl(): string {
    return this.url('pgbouncer');
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  /** Starts it (again, on the same port); resolves once its admin console answers. */
  async start(): Promise<void> {
    if (this.running) return;
    // foreground, as the server user: pgbouncer refuses to run as root
    const proc = new LoggedProcess('pgbouncer', PGBOUNCER_BIN, [this.configFile], { logFile: this.logFile, asServerUser: true });
    this.proc = proc;
    const outcome = await waitFor('pgbouncer to accept connections', async () => {
      if (!proc.running) return 'exited';
      await queryOnce(this.adminUrl(), 'SHOW VERSION');
      return 'ready';
    }, 30_000, 50).catch((err: Error) => {
      throw proc.failure(err.message);
    });
    if (outcome === 'exited') throw proc.failure('pgbouncer exited during start');
  }

  /** Immediate shutdown (SIGTERM in 1.18): every client and server connection is closed at once. */
  async stop(): Promise<void> {
    await this.proc?.stop('SIGTERM');
  }

  /** Stops and starts it on the same port: its clients see their connections dropped. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  killNow(): void {
    this.proc?.killNow();
    removeDir(this.root);
    untrack(this);
  }

  async destroy(): Promise<void> {
    await this.stop();
    removeDir(this.root);
    untrack(this);
  }
}

function writeConfig(root: string, configFile: string, port: number, users: string[], opts: PgBouncerOptions): void {
  const authFile = path.join(root, 'userlist.txt');
  writeFileSync(authFile, users.map((u) => `"${u}" ""\n`).join(''));
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '', // TCP only: the machine's own pgbouncer may use /var/run/postgresql
    auth_type: 'trust',
    auth_file: authFile,
    admin_users: users[0],
    pool_mode: 'transaction',
    max_client_conn: opts.maxClientConn ?? 100,
    default_pool_size: opts.defaultPoolSize ?? 5,
    ignore_startup_parameters: 'extra_float_digits,options,statement_timeout,lock_timeout,idle_in_transaction_session_timeout',
    ...opts.settings,
  };
  const lines = [
    '[databases]',
    `* = host=${opts.targetHost ?? '127.0.0.1'} port=${opts.targetPort}`,
    '[pgbouncer]',
    ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
  ];
  writeFileSync(configFile, `${lines.join('\n')}\n`);
}

/** pgbouncer in transaction mode in front of targetHost:targetPort; resolves once it accepts connections. */
export function startPgBouncer(opts: PgBouncerOptions): Promise<PgBouncer> {
  return PgBouncer.start(opts);
}
