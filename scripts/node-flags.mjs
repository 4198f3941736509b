// The Node flags a program's entry file asks for on its `#!/usr/bin/env -S node <flags>` line. The
// shebang is the one place they are written: `proxy-api` run as a command gets them from it, and
// whatever starts the file with `node` instead (scripts/start.mjs, the benchmark, the systemd unit,
// which the deploy test checks) passes the same ones.
import { readFileSync } from 'node:fs';

/** @param {string} entry path of a built entry file, e.g. apps/api/dist/main.js */
export function nodeFlagsOf(entry) {
  const first = readFileSync(entry, 'utf8').split('\n', 1)[0] ?? '';
  const match = /^#!\/usr\/bin\/env -S node((?: --[a-z0-9-]+(?:=\S+)?)*)\s*$/.exec(first);
  return match ? match[1].trim().split(' ').filter(Boolean) : [];
}
