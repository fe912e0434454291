/**
 * The simulated host's /sys and /dev, as far as device discovery reads them: drivers add
 * the entries for what they simulate (/dev/iommu, /dev/vfio/<group>, the PCI device
 * directories with their iommu_group and vfio-dev links). Paths elsewhere are the real
 * filesystem.
 */
import { kfail } from './errno.js';

type Node =
  { kind: 'dir'; entries: Set<string> } | { kind: 'link'; target: string } | { kind: 'file'; text: string };

/** Whether the simulation answers for `path` (under /sys or /dev). */
export function isSimulatedPath(path: string): boolean {
  return path === '/sys' || path === '/dev' || path.startsWith('/sys/') || path.startsWith('/dev/');
}

/** The simulated /sys and /dev tree. */
export class SimVfs {
  private readonly nodes = new Map<string, Node>([
    ['/sys', { kind: 'dir', entries: new Set() }],
    ['/dev', { kind: 'dir', entries: new Set() }],
  ]);

  /** Adds a file (a sysfs attribute or a device node) with its text. */
  addFile(path: string, text = ''): void {
    this.add(path, { kind: 'file', text });
  }

  /** Adds a symlink. */
  addLink(path: string, target: string): void {
    this.add(path, { kind: 'link', target });
  }

  /** Adds a directory (parents are created as needed). */
  addDir(path: string): void {
    if (!this.nodes.has(path)) this.add(path, { kind: 'dir', entries: new Set() });
  }

  /** Removes an entry (a device node that went away). */
  remove(path: string): void {
    this.nodes.delete(path);
    const parent = this.nodes.get(dirname(path));
    if (parent?.kind === 'dir') parent.entries.delete(basename(path));
  }

  readdir(path: string): string[] {
    const n = this.resolve(path);
    if (n.kind !== 'dir') kfail('ENOTDIR', path);
    return [...n.entries].sort();
  }

  readlink(path: string): string {
    // Links in the leading components are followed, as path lookup does; the last is not.
    const p = normalize(path);
    const dir = this.realpath(dirname(p));
    const n = this.nodes.get(dir === '/' ? `/${basename(p)}` : `${dir}/${basename(p)}`);
    if (!n) kfail('ENOENT', path);
    if (n.kind !== 'link') kfail('EINVAL', path);
    return n.target;
  }

  readFile(path: string): string {
    const n = this.resolve(path);
    if (n.kind === 'dir') kfail('EISDIR', path);
    return (n as { text: string }).text;
  }

  exists(path: string): boolean {
    try {
      this.resolve(path);
      return true;
    } catch {
      return false;
    }
  }

  private resolve(path: string): Node {
    const n = this.nodes.get(this.realpath(path));
    if (!n) kfail('ENOENT', path);
    return n;
  }

  // Follows symlinks (relative or absolute) in every component, as path lookup does.
  private realpath(path: string, depth = 0): string {
    if (depth > 16) kfail('ELOOP', path);
    const parts = normalize(path).split('/').filter(Boolean);
    let cur = '';
    for (let i = 0; i < parts.length; i++) {
      cur = `${cur}/${parts[i]}`;
      const n = this.nodes.get(cur);
      if (!n) kfail('ENOENT', path);
      if (n.kind === 'link') {
        const target = n.target.startsWith('/') ? n.target : `${dirname(cur)}/${n.target}`;
        return this.realpath([normalize(target), ...parts.slice(i + 1)].join('/'), depth + 1);
      }
    }
    return cur || '/';
  }

  private add(path: string, node: Node): void {
    const p = normalize(path);
    const parent = dirname(p);
    if (parent !== p) {
      this.addDir(parent);
      const d = this.nodes.get(parent);
      if (d?.kind === 'dir') d.entries.add(basename(p));
    }
    this.nodes.set(p, node);
  }
}

function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (!part || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return '/' + out.join('/');
}

function dirname(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}
