// Mocha global fixtures: one PostgreSQL for the run (a throwaway embedded cluster, or the server
// named by SLUICE_TEST_DATABASE_URL), and cleanup of everything the tests started.
import { startSharedServer, stopAll } from './db.js';
import { destroyAllTopologies } from './processes.js';

export async function mochaGlobalSetup(): Promise<void> {
  await startSharedServer();
}

export async function mochaGlobalTeardown(): Promise<void> {
  await destroyAllTopologies(); // standby pairs, pgbouncers, Patroni clusters a test left behind
  await stopAll();
}
