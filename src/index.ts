// sluice's public API.
export { Worker, runWorker, type WorkerOptions, type WorkerState } from './worker/worker.js';
export { addJob, addJobs, type JobSpec } from './enqueue.js';
export { type JobContext, type JobInfo, type TaskHandler, type TaskDefinition, type TaskList } from './tasks.js';
export { SluiceError, ConfigError, InvalidJobError, JobNotFoundError, JobStateError, JobAbortedError, PermanentError, type ErrorCode } from './errors.js';
export { loadConfig } from './config/load.js';
export { configSchema, type SluiceConfig, type ConfigInput } from './config/schema.js';
export { migrate, currentVersion, expectedVersion } from './db/migrate.js';
