#!/usr/bin/env node
// The `task-escrow` bin: runs cli/task-escrow.ts with tsx (a dependency installed by `npm install`),
// in this process, so the terminal, signals and the exit code are the CLI's own.
import { register } from 'tsx/esm/api';

register();
await import(new URL('../cli/task-escrow.ts', import.meta.url).href);
