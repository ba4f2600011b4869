// worker.queues: the queues a worker takes jobs from, each with its own slots. A config file may
// give a list of names or a map of name to settings; both resolve to one list of entries.
export interface QueueEntry {
  name: string;
  /** Jobs of this queue run at once in this worker; default worker.concurrency. */
  concurrency?: number;
}

export type QueueSetting = string | QueueEntry;

const QUEUE_KEYS = new Set(['concurrency']);

/** A map `{ emails: { concurrency: 5 } }` as the list `[{ name: 'emails', concurrency: 5 }]`; anything else as it is. */
export function queuesAsList(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.entries(value).map(([name, settings]) =>
    settings === null || settings === undefined ? { name } : typeof settings === 'object' && !Array.isArray(settings) ? { name, ...settings } : { name, settings },
  );
}

export function checkQueues(value: unknown): void {
  if (!Array.isArray(value) || value.length === 0) throw new Error('must be a non-empty list of queue names, or a map of queue name to settings');
  const seen = new Set<string>();
  for (const q of value as unknown[]) {
    const name = typeof q === 'string' ? q : q && typeof q === 'object' ? (q as QueueEntry).name : undefined;
    if (typeof name !== 'string' || name.trim() === '' || name.length > 128) {
      throw new Error(`has an invalid queue name ${JSON.stringify(name ?? q)} (non-empty, at most 128 characters)`);
    }
    if (seen.has(name)) throw new Error(`names queue ${JSON.stringify(name)} twice`);
    seen.add(name);
    if (typeof q === 'string') continue;
    for (const [key, v] of Object.entries(q as object)) {
      if (key === 'name') continue;
      if (!QUEUE_KEYS.has(key)) throw new Error(`queue ${JSON.stringify(name)}: unknown setting ${JSON.stringify(key)} (known: concurrency)`);
      if (key === 'concurrency' && (typeof v !== 'number' || !Number.isInteger(v) || v < 1)) {
        throw new Error(`queue ${JSON.stringify(name)}: concurrency must be an integer >= 1, got ${JSON.stringify(v)}`);
      }
    }
  }
}

/** Each queue with its number of slots in this worker. */
export function queueSlots(queues: readonly QueueSetting[], defaultConcurrency: number): { name: string; concurrency: number }[] {
  return queues.map((q) => (typeof q === 'string' ? { name: q, concurrency: defaultConcurrency } : { name: q.name, concurrency: q.concurrency ?? defaultConcurrency }));
}

export function queueNames(queues: readonly QueueSetting[]): string[] {
  return queues.map((q) => (typeof q === 'string' ? q : q.name));
}
