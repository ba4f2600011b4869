// The dashboard's browser files: its own (src/dashboard/assets) and the libraries it uses,
// served from this package's dependencies (no CDN: it must work in a closed network). All are
// read once, at start. The page's one inline script is the import map, allowed by its hash in
// the Content-Security-Policy; nothing else inline may run.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
// src/dashboard or dist/dashboard: the package root is two levels up either way
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const OWN = path.join(root, 'src', 'dashboard', 'assets');

export interface Asset {
  type: string;
  body: Buffer;
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

function asset(file: string): Asset {
  return { type: TYPES[path.extname(file)] ?? 'application/octet-stream', body: readFileSync(file) };
}

/** URL path below /dashboard/assets/ -> file. */
function files(): Record<string, string> {
  return {
    'app.js': path.join(OWN, 'app.js'),
    'style.css': path.join(OWN, 'style.css'),
    'vendor/preact.mjs': require.resolve('preact'),
    'vendor/hooks.mjs': require.resolve('preact/hooks'),
    'vendor/htm.mjs': path.join(path.dirname(require.resolve('htm')), 'htm.mjs'),
    'vendor/uPlot.esm.js': require.resolve('uplot/dist/uPlot.esm.js'),
    'vendor/uPlot.min.css': require.resolve('uplot/dist/uPlot.min.css'),
  };
}

const IMPORT_MAP = JSON.stringify({
  imports: {
    preact: './assets/vendor/preact.mjs',
    'preact/hooks': './assets/vendor/hooks.mjs',
    htm: './assets/vendor/htm.mjs',
    uplot: './assets/vendor/uPlot.esm.js',
  },
});

export class Assets {
  private readonly byPath = new Map<string, Asset>();
  readonly csp: string;

  constructor() {
    for (const [name, file] of Object.entries(files())) this.byPath.set(name, asset(file));
    const importMapHash = createHash('sha256').update(IMPORT_MAP).digest('base64');
    this.csp = [
      "default-src 'none'",
      `script-src 'self' 'sha256-${importMapHash}'`,
      "style-src 'self'",
      "img-src 'self' data:",
      "connect-src 'self'",
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join('; ');
  }

  get(name: string): Asset | undefined {
    return this.byPath.get(name);
  }

  /** The single-page app's shell. */
  page(): string {
    return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sluice dashboard</title>
<link rel="stylesheet" href="./assets/vendor/uPlot.min.css">
<link rel="stylesheet" href="./assets/style.css">
<script type="importmap">${IMPORT_MAP}</script>
<script type="module" src="./assets/app.js"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
  }

  /** The login form; `failed` after a wrong token. No user input is echoed. */
  loginPage(failed: boolean): string {
    return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sluice dashboard: log in</title>
<link rel="stylesheet" href="./assets/style.css">
</head>
<body class="login">
<form method="post" action="./login" class="login-form">
<h1>sluice</h1>
<label for="token">Dashboard token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
${failed ? '<p class="error" role="alert">Wrong token.</p>' : ''}
<button type="submit">Log in</button>
</form>
</body>
</html>
`;
  }
}
