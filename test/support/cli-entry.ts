// The `sluice` command from the TypeScript sources, as bin/sluice.js runs it from dist/.
import { run } from '../../src/cli/main.js';

await run();
