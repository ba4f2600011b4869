// The one redaction of credentials, used by every output path: logs, CLI errors, `config check`,
// `status`, /readyz bodies. It covers what a libpq connection string can carry: the password of
// a URL's userinfo (`postgres://user:secret@host`), `password` and `sslpassword` as URL query
// parameters or in keyword/value form (`host=h password=secret`), and PGPASSWORD. `sslkey` and
// `sslcert` name files whose contents sluice never reads, so they are shown as they are.

// any scheme: a mistyped URL (mysql://, postgress://) must not print its password either
const USERINFO_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:@/\s]*:)[^@\s]*@/gi;
const PASSWORD_SETTING = /(\b(?:sslpassword|password|pgpassword)\s*=\s*)('(?:\\.|[^'\\])*'|[^\s&#'"]+)/gi;

export const REDACTED = '***';

/** `text` with every credential it names replaced by ***. */
export function redact(text: string): string {
  return text.replace(USERINFO_PASSWORD, `$1${REDACTED}@`).replace(PASSWORD_SETTING, `$1${REDACTED}`);
}
