// The systems under test, loaded on demand: a child process imports only the one it runs, so its
// RSS holds that system's code and nothing else.
import type { SystemAdapter, SystemName, VariantInfo } from './types.js';

export const SYSTEMS: SystemName[] = ['sluice', 'graphile', 'pgboss'];

export async function loadAdapter(system: SystemName): Promise<SystemAdapter> {
  switch (system) {
    case 'sluice':
      return (await import('./sluice.js')).adapter;
    case 'graphile':
      return (await import('./graphile.js')).adapter;
    case 'pgboss':
      return (await import('./pgboss.js')).adapter;
  }
}

export async function loadVariants(system: SystemName): Promise<VariantInfo[]> {
  switch (system) {
    case 'sluice':
      return (await import('./sluice.js')).variants;
    case 'graphile':
      return (await import('./graphile.js')).variants;
    case 'pgboss':
      return (await import('./pgboss.js')).variants;
  }
}

