// sluice's public API.
export { Worker, runWorker, type WorkerOptions, type WorkerState } from './worker.js';
export { addJob, addJobs, InvalidJobError, type JobSpec } from './jobs/enqueue.js';
export { PermanentError, type JobContext, type JobInfo, type TaskHandler, type TaskDefinition, type TaskList } from './tasks.js';
export { JobAbortedError } from './jobs/execute.js';
export { loadConfig } from './config/load.js';
export { configSchema, type SluiceConfig, type ConfigInput } from './config/schema.js';
export { ConfigError } from './errors.js';
export { migrate, currentVersion, expectedVersion } from './migrate.js';
