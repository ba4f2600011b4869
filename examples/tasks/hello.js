// Task "hello": the file name is the task name. Try it:
//   sluice add hello --payload '{"name":"world"}'
//   SELECT sluice.add_job('hello', '{"name":"world"}');
// A handler gets the job's payload and a context (ctx.job, ctx.log, ctx.db, ctx.signal); what it
// returns is stored as the job's result (`sluice show ID`).
export default async function hello(payload, ctx) {
  const name = typeof payload.name === 'string' && payload.name !== '' ? payload.name : 'world';
  ctx.log.info('saying hello');
  return { greeting: `hello ${name}`, attempt: ctx.job.attempt };
}
