// A real Patroni cluster for failover tests: one etcd (v3 API) and N Patroni nodes running
// Debian's PostgreSQL 15 with streaming replication, all on free loopback ports in one temp folder.
// Tests can switch the leader over, kill it (Patroni and PostgreSQL, SIGKILL), and bring the killed
// node back, which Patroni rewinds (pg_rewind) into a replica of the new leader.
//
// Timings: ttl 10 s, loop_wait 1 s, retry_timeout 4 s. Patroni wants loop_wait + 2 * retry_timeout
// <= ttl (a leader that cannot reach etcd demotes itself before its key expires); a dead leader's
// key expires within ttl, so a failover takes about 10-15 s. Patroni 3.0 does not enforce minimums.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../../src/embedded/cluster.js';
import { processAlive } from './cli.js';
import { waitFor } from './db.js';
import {
  LoggedProcess, logTail, makeServerDir, makeTempRoot, postmasterOf, removeDir, signalGroupOf, track, untrack, type Topology,
} from './processes.js';
import { inRecovery, queryOnce } from './standby.js';
import { ETCD_BIN, PATRONI_BIN, PG15_BIN_DIR } from './tools.js';

const DCS_SETTINGS = {
  ttl: 10,
  loop_wait: 1,
  retry_timeout: 4,
  maximum_lag_on_failover: 1024 * 1024,
};

// Patroni's defaults plus what pg_rewind needs (wal_log_hints), fast and unsafe for a machine crash.
const PG_PARAMETERS: Record<string, string | number> = {
  wal_level: 'replica',
  hot_standby: 'on',
  wal_log_hints: 'on',
  max_wal_senders: 10,
  max_replication_slots: 10,
  max_connections: 100,
  fsync: 'off',
  synchronous_commit: 'off',
  dynamic_shared_memory_type: 'mmap', // in the data folder: a SIGKILLed server leaves nothing in /dev/shm
};

const PG_HBA = [
  'local all all trust',
  'host all all 127.0.0.1/32 trust',
  'host replication all 127.0.0.1/32 trust',
];

/** A member as Patroni's REST API reports it in GET /cluster. */
export interface Member {
  name: string;
  role: 'leader' | 'replica' | 'sync_standby' | 'standby_leader';
  state: string;
  timeline?: number;
  lag?: number | string;
}

class Etcd {
  readonly clientUrl: string;
  private readonly proc: LoggedProcess;

  private constructor(root: string, clientPort: number, peerPort: number) {
    this.clientUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    this.proc = new LoggedProcess('etcd', ETCD_BIN, [
      '--name', 'etcd', '--data-dir', path.join(root, 'etcd'),
      '--listen-client-urls', this.clientUrl, '--advertise-client-urls', this.clientUrl,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `etcd=${peerUrl}`, '--initial-cluster-state', 'new',
      '--initial-cluster-token', path.basename(root),
      '--logger', 'zap', '--log-level', 'warn',
    ], { logFile: path.join(root, 'etcd.log') });
  }

  static async start(root: string): Promise<Etcd> {
    const etcd = new Etcd(root, await freePort(), await freePort());
    const outcome = await waitFor('etcd to be healthy', async () => {
      if (!etcd.proc.running) return 'exited';
      const res = await fetch(`${etcd.clientUrl}/health`, { signal: AbortSignal.timeout(2000) });
      return ((await res.json()) as { health?: string }).health === 'true' && 'ready';
    }, 30_000, 100).catch((err: Error) => err);
    if (outcome !== 'ready') {
      await etcd.stop();
      throw etcd.proc.failure(outcome === 'exited' ? 'etcd exited during start' : (outcome as Error).message);
    }
    return etcd;
  }

  get hostPort(): string {
    return this.clientUrl.replace('http://', '');
  }

  killNow(): void {
    this.proc.killNow();
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGKILL');
  }
}

export class PatroniNode {
  readonly dataDir: string;
  readonly configFile: string;
  readonly logFile: string;
  private proc: LoggedProcess | undefined;
  private wanted = false;

  constructor(readonly name: string, readonly dir: string, readonly pgPort: number, readonly apiPort: number) {
    this.dataDir = path.join(dir, 'data');
    this.configFile = path.join(dir, 'patroni.yml');
    this.logFile = path.join(dir, 'patroni.log');
  }

  url(database = 'postgres', user = 'postgres'): string {
    return `postgres://${user}@127.0.0.1:${this.pgPort}/${database}`;
  }

  apiUrl(pathname: string): string {
    return `http://127.0.0.1:${this.apiPort}${pathname}`;
  }

  /** True while its Patroni process runs. */
  get running(): boolean {
    return this.proc?.running ?? false;
  }

  /** Patroni gave up (a fatal error) rather than being killed or stopped by us. */
  get exitedByItself(): boolean {
    return this.wanted && !this.running;
  }

  writeConfig(scope: string, etcdHostPort: string, parameters: Record<string, string | number>): void {
    const config = {
      scope,
      name: this.name,
      log: { level: 'INFO' },
      restapi: { listen: `127.0.0.1:${this.apiPort}`, connect_address: `127.0.0.1:${this.apiPort}` },
      etcd3: { host: etcdHostPort },
      bootstrap: {
        dcs: { ...DCS_SETTINGS, postgresql: { use_pg_rewind: true, use_slots: true, parameters } },
        initdb: [{ encoding: 'UTF8' }, { locale: 'C' }],
        pg_hba: PG_HBA,
      },
      postgresql: {
        listen: `127.0.0.1:${this.pgPort}`,
        connect_address: `127.0.0.1:${this.pgPort}`,
        data_dir: this.dataDir,
        bin_dir: PG15_BIN_DIR,
        pgpass: path.join(this.dir, 'pgpass'),
        authentication: {
          superuser: { username: 'postgres' },
          replication: { username: 'replicator' },
          rewind: { username: 'postgres' },
        },
        // a rewind that fails falls back to a fresh copy from the leader: the node must come back
        use_pg_rewind: true,
        remove_data_directory_on_rewind_failure: true,
        parameters: { unix_socket_directories: this.dir },
        pg_hba: PG_HBA,
      },
      watchdog: { mode: 'off' },
    };
    writeFileSync(this.configFile, stringify(config));
  }

  /** Starts Patroni, which starts (or bootstraps, or clones) its PostgreSQL. */
  start(): void {
    if (this.running) return;
    this.wanted = true;
    this.proc = new LoggedProcess(`patroni ${this.name}`, PATRONI_BIN, [this.configFile], {
      logFile: this.logFile,
      asServerUser: true,
      cwd: this.dir,
      env: { PATH: process.env.PATH, HOME: this.dir, LANG: 'C.UTF-8' },
    });
  }

  /** The node crashes: SIGKILL of Patroni (with any pg_basebackup or pg_rewind of it), then of PostgreSQL. */
  async kill(): Promise<void> {
    this.wanted = false;
    await this.proc?.stop('SIGKILL'); // first, so it cannot start PostgreSQL again
    const postmaster = postmasterOf(this.dataDir);
    if (postmaster === undefined) return;
    signalGroupOf(postmaster, 'SIGKILL');
    await waitFor(`the postmaster of ${this.name} to die`, () => !processAlive(postmaster), 10_000);
  }

  /** Stops everything; PostgreSQL with an immediate shutdown so it frees its shared memory. */
  async stop(): Promise<void> {
    this.wanted = false;
    await this.proc?.stop('SIGKILL');
    const postmaster = postmasterOf(this.dataDir);
    if (postmaster === undefined) return;
    signalGroupOf(postmaster, 'SIGQUIT');
    const gone = await waitFor('postgres to exit', () => !processAlive(postmaster), 15_000).catch(() => false);
    if (!gone) signalGroupOf(postmaster, 'SIGKILL');
  }

  /** For process exit: Patroni killed, PostgreSQL told to shut down immediately (it finishes alone). */
  killNow(): void {
    this.proc?.killNow();
    const postmaster = postmasterOf(this.dataDir);
    if (postmaster !== undefined) signalGroupOf(postmaster, 'SIGQUIT');
  }

  /** Why this node is not doing what was awaited: the tail of its log. */
  logTail(): string {
    return `--- ${this.logFile}:\n${logTail(this.logFile, 30)}`;
  }
}

export interface PatroniOptions {
  nodes?: number;
  /** More PostgreSQL parameters for every node (bootstrap configuration in etcd). */
  parameters?: Record<string, string | number>;
}

export class PatroniCluster implements Topology {
  private constructor(readonly root: string, private readonly etcd: Etcd, readonly nodes: PatroniNode[]) {}

  static async start(opts: PatroniOptions = {}): Promise<PatroniCluster> {
    const root = makeTempRoot('patroni');
    let cluster: PatroniCluster | undefined;
    try {
      const etcd = await Etcd.start(root);
      const nodes: PatroniNode[] = [];
      for (let i = 1; i <= (opts.nodes ?? 2); i++) {
        nodes.push(new PatroniNode(`node${i}`, makeServerDir(path.join(root, `node${i}`), 0o755), await freePort(), await freePort()));
      }
      cluster = new PatroniCluster(root, etcd, nodes);
      track(cluster);
      for (const node of nodes) node.writeConfig(path.basename(root), etcd.hostPort, { ...PG_PARAMETERS, ...opts.parameters });
      // node1 bootstraps; the others then clone it, so node1 is the first leader on every run
      nodes[0].start();
      await cluster.waitForLeader(undefined, 90_000);
      for (const node of nodes.slice(1)) node.start();
      await cluster.waitForReplicas(120_000);
    } catch (err) {
      if (cluster) await cluster.destroy();
      else removeDir(root);
      throw err;
    }
    return cluster;
  }

  /** A libpq multi-host URL of every node (node-postgres cannot use it; sluice may). */
  multiHostUrl(database = 'postgres', user = 'postgres'): string {
    return `postgres://${user}@${this.nodes.map((n) => `127.0.0.1:${n.pgPort}`).join(',')}/${database}`;
  }

  node(name: string): PatroniNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no Patroni node named ${name}`);
    return node;
  }

  /** The members as Patroni reports them (GET /cluster on the first node whose API answers). */
  async members(): Promise<Member[]> {
    let last: unknown;
    for (const node of this.nodes.filter((n) => n.running)) {
      try {
        const res = await fetch(node.apiUrl('/cluster'), { signal: AbortSignal.timeout(3000) });
        if (res.ok) return ((await res.json()) as { members: Member[] }).members;
        last = new Error(`GET /cluster on ${node.name}: HTTP ${res.status}`);
      } catch (err) {
        last = err;
      }
    }
    throw new Error(`no Patroni REST API answers: ${(last as Error | undefined)?.message ?? 'no node is running'}`);
  }

  /** The node Patroni calls leader (its PostgreSQL may still be promoting). */
  async leader(): Promise<PatroniNode | undefined> {
    const leader = (await this.members()).find((m) => m.role === 'leader');
    return leader && this.node(leader.name);
  }

  async replicas(): Promise<PatroniNode[]> {
    return (await this.members()).filter((m) => m.role === 'replica' || m.role === 'sync_standby').map((m) => this.node(m.name));
  }

  /** Resolves with the leader once its PostgreSQL takes writes; with `notNode`, a leader other than it. */
  async waitForLeader(notNode?: PatroniNode, timeoutMs = 60_000): Promise<PatroniNode> {
    const what = notNode ? `a leader other than ${notNode.name}` : 'a leader';
    return this.waitOrExplain(what, async () => {
      const leader = await this.leader();
      return leader && leader !== notNode && !(await inRecovery(leader.url())) ? leader : undefined;
    }, timeoutMs);
  }

  /** Resolves once every running node but the leader is a replica streaming from it. */
  async waitForReplicas(timeoutMs = 60_000): Promise<PatroniNode[]> {
    return this.waitOrExplain('every other running node to stream from the leader', async () => {
      const members = await this.members();
      const leader = members.find((m) => m.role === 'leader');
      const others = this.nodes.filter((n) => n.running && n.name !== leader?.name);
      if (!leader || others.length === 0) return undefined;
      for (const node of others) if (!(await this.isStreamingReplica(node, members))) return undefined;
      return others;
    }, timeoutMs);
  }

  /** A replica per Patroni, on the leader's timeline (not a former leader before its rewind), streaming per PostgreSQL. */
  private async isStreamingReplica(node: PatroniNode, members: Member[]): Promise<boolean> {
    const member = members.find((m) => m.name === node.name);
    const leader = members.find((m) => m.role === 'leader');
    if (!member || !leader || member === leader || member.state !== 'running') return false;
    if (member.timeline === undefined || member.timeline !== leader.timeline) return false;
    const rows = await queryOnce<{ recovering: boolean; status: string | null }>(node.url(),
      'SELECT pg_is_in_recovery() AS recovering, (SELECT status FROM pg_stat_wal_receiver) AS status');
    return rows[0].recovering && rows[0].status === 'streaming';
  }

  /** A planned switchover (POST /switchover) to `candidate` (default: a replica); resolves when it takes writes. */
  async switchover(candidate?: PatroniNode): Promise<PatroniNode> {
    const leader = await this.waitForLeader();
    const target = candidate ?? (await this.replicas())[0];
    if (!target) throw new Error('switchover needs a replica');
    const res = await fetch(leader.apiUrl('/switchover'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ leader: leader.name, candidate: target.name }),
      signal: AbortSignal.timeout(60_000),
    });
    if (!res.ok) throw new Error(`switchover ${leader.name} -> ${target.name}: HTTP ${res.status} ${await res.text()}`);
    const next = await this.waitForLeader(leader);
    if (next !== target) throw new Error(`switchover to ${target.name} made ${next.name} the leader`);
    return next;
  }

  /** SIGKILLs the leader's Patroni and PostgreSQL; returns that node. */
  async killLeader(): Promise<PatroniNode> {
    const leader = await this.waitForLeader();
    await leader.kill();
    return leader;
  }

  /** Starts a killed or stopped node again; resolves once it streams from the leader as a replica. */
  async restartNode(node: PatroniNode, timeoutMs = 120_000): Promise<void> {
    node.start();
    await this.waitOrExplain(`${node.name} to come back as a streaming replica`,
      async () => this.isStreamingReplica(node, await this.members()), timeoutMs);
  }

  /**
   * waitFor, failing at once when a node's Patroni exits by itself, and with the tail of every
   * node's log in the error: Patroni says why it is stuck.
   */
  private async waitOrExplain<T>(what: string, check: () => Promise<T>, timeoutMs: number): Promise<NonNullable<T>> {
    type Outcome = { crashed: PatroniNode } | { value: NonNullable<T> };
    const outcome = await waitFor<Outcome | undefined>(what, async () => {
      const crashed = this.nodes.find((n) => n.exitedByItself);
      if (crashed) return { crashed };
      const value = await check();
      return value ? { value } : undefined;
    }, timeoutMs, 250).then((o) => o as Outcome, (err: Error) => err);
    const logs = this.nodes.map((n) => n.logTail()).join('\n');
    if (outcome instanceof Error) throw new Error(`${outcome.message}\n${logs}`);
    if ('crashed' in outcome) throw new Error(`Patroni on ${outcome.crashed.name} exited while waiting for ${what}\n${logs}`);
    return outcome.value;
  }

  killNow(): void {
    for (const node of this.nodes) node.killNow();
    this.etcd.killNow();
    removeDir(this.root);
    untrack(this);
  }

  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
    await this.etcd.stop();
    removeDir(this.root);
    untrack(this);
  }
}

/** etcd and `nodes` Patroni nodes; resolves once there is a leader and every replica streams. */
export function startPatroniCluster(opts: PatroniOptions = {}): Promise<PatroniCluster> {
  return PatroniCluster.start(opts);
}
