// Task "send_welcome": checks its payload and fails for good, without retries, when the payload
// can never work; other errors (a flaky mail server, say) are retried with backoff.
//   sluice add send_welcome --payload '{"email":"ada@example.com"}'   completes
//   sluice add send_welcome --payload '{"email":"nope"}'              fails at once (1 attempt)
import { PermanentError } from 'sluice';

export default async function sendWelcome(payload, ctx) {
  const email = payload.email;
  if (typeof email !== 'string' || !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) {
    throw new PermanentError(`payload.email must be an email address, got ${JSON.stringify(email ?? null)}`);
  }
  if (ctx.signal.aborted) throw ctx.signal.reason;
  ctx.log.info({ job: ctx.job.id }, 'welcome mail sent (pretend)');
  return { sent: true, to: email };
}
