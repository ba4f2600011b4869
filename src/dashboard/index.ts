// The dashboard: mounted on the daemon's HTTP server (src/http/server.ts) or served alone by
// `sluice dashboard`.
export { createDashboard, type DashboardHandler, type DashboardOptions } from './routes.js';
export { dashboardRefusal, isLoopbackHost } from './auth.js';
