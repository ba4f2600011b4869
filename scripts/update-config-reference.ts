// Writes the config reference generated from the schema into README.md (npm run docs:config).
import { readFileSync, writeFileSync } from 'node:fs';
import { configReference } from '../src/config/reference.js';

const START = '<!-- config-reference:start -->';
const END = '<!-- config-reference:end -->';
const readme = readFileSync('README.md', 'utf8');
const a = readme.indexOf(START);
const b = readme.indexOf(END);
if (a < 0 || b < a) throw new Error('README.md lacks the config-reference markers');
writeFileSync('README.md', `${readme.slice(0, a + START.length)}\n${configReference()}\n${readme.slice(b)}`);
