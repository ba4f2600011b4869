// sluice's public API.
export { Worker, runWorker, type WorkerOptions, type WorkerState } from './worker/worker.js';
export { addJob, addJobs, type JobSpec } from './enqueue.js';
export { type JobContext, type JobInfo, type TaskHandler, type TaskDefinition, type TaskList } from './tasks.js';
export { SluiceError, ConfigError, InvalidJobError, JobNotFoundError, JobStateError, JobAbortedError, PermanentError, type ErrorCode } from './errors.js';
export { snooze, type Snooze } from './snooze.js';
export { loadConfig } from './config/load.js';
export { configSchema, type SluiceConfig, type ConfigInput } from './config/schema.js';
export { migrate, currentVersion, expectedVersion } from './db/migrate.js';
export { applyRoles, type RoleOptions, type AppliedRoles } from './db/roles.js';
export {
  getJob,
  listJobs,
  retryJob,
  runJobNow,
  cancelJob,
  deleteJob,
  JOB_STATUSES,
  type JobStatus,
  type JobSummary,
  type JobDetail,
  type JobFilter,
  type StatusChange,
} from './admin/jobs.js';
export { queueStatus, listWorkers, type QueueStatus, type WorkerStatus } from './admin/status.js';
export { listQueues, setQueueLimits, pauseQueue, resumeQueue, type QueueSummary, type QueueLimits } from './admin/queues.js';
