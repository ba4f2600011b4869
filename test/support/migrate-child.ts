// Runs one migration in its own process, for the concurrent-migration test.
import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';

const [url, schema] = process.argv.slice(2);
const pool = new pg.Pool({ connectionString: url, max: 1 });
const result = await migrate(pool, schema!);
await pool.end();
process.stdout.write(JSON.stringify(result));
