// The config reference as a Markdown table, generated from the schema (README embeds it; a test
// keeps the two in step, `npm run docs:config` rewrites it).
import { schemaKeys } from './schema.js';

export function configReference(): string {
  const rows: string[] = ['| key | default | environment | meaning |', '|---|---|---|---|'];
  for (const [key, spec] of schemaKeys()) {
    rows.push(`| \`${key}\` | \`${JSON.stringify(spec.default)}\` | ${spec.env ? `\`${spec.env}\`` : ''} | ${spec.doc.replaceAll('|', '\\|')} |`);
  }
  return rows.join('\n');
}
