// Where wake-ups come from and where they go: a notification wakes the runner of the queue it
// names (now, or at its run_at through a due timer); a (re)connect and the safety poll wake every
// runner, since notifications sent while disconnected are lost. Cancel notifications go to the
// lease, which asks the database before anything is aborted; a queue-settings notification, the
// reconnect and the poll make the worker read queue settings again. Every notification is a
// hint: a wake-up costs at most one coalesced claim, however many arrive.
import { interval, Subscription } from 'rxjs';
import type { Events } from '../observe/events.js';
import type { Runners } from '../runner/runners.js';
import { DueTimes } from './due-times.js';
import type { Notifications } from './listener.js';

export interface WakeupOptions {
  listener: Notifications;
  runners: Runners;
  pollMs: number;
  /** Database clock minus local clock (the lease measures it). */
  clockOffsetMs(): number;
  /** A notification says a job was cancelled: a hint to check, never a reason to abort. */
  cancelHint(id: string): void;
  /** Queue settings may have changed: of `queue`, or (undefined) of any queue. */
  settingsHint(queue: string | undefined): void;
  events: Events;
}

export class Wakeups {
  private readonly subscription = new Subscription();
  private readonly dueTimes = new Map<string, DueTimes>();

  constructor(private readonly opts: WakeupOptions) {
    for (const r of opts.runners.list) this.dueTimes.set(r.queue, new DueTimes(() => r.wake()));
  }

  start(): void {
    const { listener, runners, events } = this.opts;
    this.subscription.add(
      listener.events$.subscribe((e) => {
        switch (e.type) {
          case 'jobs': {
            events.emit({ type: 'notification' });
            if (e.runAt) this.dueTimes.get(e.queue)?.add(e.runAt, this.opts.clockOffsetMs());
            if (e.due) runners.wake(e.queue);
            return;
          }
          case 'cancel':
            events.emit({ type: 'notification' });
            this.opts.cancelHint(e.id);
            return;
          case 'queueSettings':
            events.emit({ type: 'notification' });
            this.opts.settingsHint(e.queue);
            return;
          // started once the listener is up: every 'connected' seen here is a reconnect
          case 'connected':
            events.emit({ type: 'listener.reconnected' });
            this.opts.settingsHint(undefined);
            // what was committed while no one listened may be older than the claim window
            runners.wakeAll(true);
            return;
          case 'disconnected':
            events.emit({ type: 'listener.down' });
            return;
        }
      }),
    );
    this.subscription.add(
      interval(this.opts.pollMs).subscribe(() => {
        this.opts.settingsHint(undefined);
        runners.wakeAll();
      }),
    );
  }

  stop(): void {
    this.subscription.unsubscribe();
    for (const d of this.dueTimes.values()) d.clear();
  }
}
