// Debian's Chromium driven by playwright-core, for the dashboard's browser tests and screenshots.
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_BIN = '/usr/bin/chromium';

export async function launchChromium(): Promise<Browser> {
  // --no-sandbox: the tests may run as root (CI containers), where Chromium's sandbox refuses to start
  return chromium.launch({ executablePath: CHROMIUM_BIN, args: ['--no-sandbox', '--disable-dev-shm-usage'], headless: true });
}
