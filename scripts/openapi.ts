/** `npm run openapi`: regenerates openapi/openapi.json from the route schemas. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { generateOpenapi } from '../src/http/openapi-document.js';

mkdirSync('openapi', { recursive: true });
writeFileSync('openapi/openapi.json', await generateOpenapi());
console.log('wrote openapi/openapi.json');
