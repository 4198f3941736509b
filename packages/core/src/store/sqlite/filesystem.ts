import { readFileSync, statfsSync } from 'node:fs';

/**
 * Where the SQLite file must not be kept, told once at start: SQLite and the programs run there,
 * but not as a reader of the README would expect.
 */

/**
 * The filesystems (statfs's f_type) that serve a file to more than one host, by name. SQLite's WAL
 * mode keeps its index in a memory-mapped -shm file and relies on POSIX locks: over these, a
 * process on another host sees neither, and on one host they depend on the mount (NFS mounted
 * `nolock` keeps locks local; some servers drop them). SQLite's own documentation says not to use
 * WAL over a network filesystem. A cloud's shared volume is often one of these (AWS EFS is NFS, an
 * Azure file share SMB). FUSE is left out: it is as often local (an encrypted home folder).
 */
const NETWORK_FILESYSTEMS = new Map<number, string>([
  [0x6969, 'nfs'],
  [0x517b, 'smb'],
  [0xff534d42, 'cifs'],
  [0xfe534d42, 'smb2'],
  [0x5346414f, 'afs'],
  [0x00c36400, 'ceph'],
  [0x0bd00bd0, 'lustre'],
  [0x01161970, 'gfs2'],
  [0x7461636f, 'ocfs2'],
  [0x01021997, '9p'],
  [0x786f4256, 'vboxsf'],
]);

/** A function naming the filesystem `dir` is on if `names` has it (by statfs's f_type), else null (or when it cannot be told). */
const filesystemIn =
  (names: ReadonlyMap<number, string>) =>
  (dir: string, statfs: (dir: string) => { type: number } = statfsSync): string | null => {
    try {
      // Unsigned: a platform whose f_type is a 32-bit int gives CIFS's and SMB2's as negative.
      return names.get(statfs(dir).type >>> 0) ?? null;
    } catch {
      return null;
    }
  };

/** The name of the network filesystem `dir` is on, or null for a local one. */
export const networkFilesystem = filesystemIn(NETWORK_FILESYSTEMS);

/** tmpfs and ramfs (statfs's f_type): the file lives in memory, and a restart of the machine empties it. */
const MEMORY_FILESYSTEMS = new Map<number, string>([
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
]);

/** The name of the in-memory filesystem `dir` is on, or null. */
export const memoryFilesystem = filesystemIn(MEMORY_FILESYSTEMS);

/**
 * The mount point `dir` is under when that mount is a service's private /tmp or /var/tmp (systemd's
 * PrivateTmp=yes, as in the shipped units), or null. Each service gets its own, bind-mounted from a
 * folder named systemd-private-…: proxy-api and proxy-worker each see a different file at the same
 * path, and systemd deletes it when the service stops. Told by the mount's root in mountinfo.
 */
export function privateTmp(dir: string, mountinfo: () => string = () => readFileSync('/proc/self/mountinfo', 'utf8')): string | null {
  let text: string;
  try {
    text = mountinfo();
  } catch {
    return null;
  }
  let best: { point: string; root: string } | null = null;
  for (const line of text.split('\n')) {
    // "36 35 98:0 /systemd-private-…-proxy-api.service-Ab12/tmp /tmp rw,nosuid - ext4 /dev/vda rw"
    const [, , , root, point] = line.split(' ').map(unescapeMount);
    if (root === undefined || point === undefined) continue;
    const holds = dir === point || dir.startsWith(point.endsWith('/') ? point : `${point}/`);
    if (holds && (!best || point.length >= best.point.length)) best = { point, root };
  }
  return best && /\/systemd-private-[^/]+\/tmp$/.test(best.root) ? best.point : null;
}

/** mountinfo writes a space, tab, newline or backslash in a path as an octal escape (\040). */
const unescapeMount = (field: string) => field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));

/** What to tell about keeping the database in `dir`: one message each (to follow the setting's name), none on a local disk. */
export function placeWarnings(dir: string): Array<{ message: string; filesystem: string }> {
  const warnings: Array<{ message: string; filesystem: string }> = [];
  const network = networkFilesystem(dir);
  if (network) {
    warnings.push({
      filesystem: network,
      message: `is on a network filesystem (${network}): SQLite's locks and shared memory are not safe there, and the file can be damaged; keep it on a local disk, or move to PostgreSQL (DATABASE_URL)`,
    });
  }
  const memory = memoryFilesystem(dir);
  if (memory)
    warnings.push({ filesystem: memory, message: `is on ${memory}, in memory: every job is lost when the machine restarts, which a 202 promised would not be; keep it on a disk` });
  const mount = privateTmp(dir);
  if (mount) {
    warnings.push({
      filesystem: 'private-tmp',
      message: `is in this service's private ${mount} (systemd's PrivateTmp=yes): each service has its own, so proxy-api and the workers do not share this file, and systemd deletes it when the service stops; keep it in the data folder`,
    });
  }
  return warnings;
}
