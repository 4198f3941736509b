/** The Node flags on an entry file's `#!/usr/bin/env -S node <flags>` line (see node-flags.mjs). */
export function nodeFlagsOf(entry: string): string[];
