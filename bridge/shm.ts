/**
 * Shared-memory transfers on one host (docs/protocol.md §5).
 *
 * Node has no mmap, so each direction costs one memcpy into or out of tmpfs; the runtime
 * maps the file without copying. For large tensors that beats pushing the bytes through
 * the socket (bench: bridge.transfer64mb). The folder is private (0700) and removed on
 * close, or when this process ends (exit, SIGINT, SIGTERM, SIGHUP: bridge/cleanup.ts); the
 * runtime only touches paths of the form /dev/shm/liaison-XXXXXX/name.
 */
import { closeSync, existsSync, mkdtempSync, openSync, readSync, fstatSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { atProcessEnd } from './cleanup.js';

const live = new Set<string>();
let hooked = false;

export class ShmDir {
  private n = 0;
  private constructor(readonly dir: string) {
    live.add(dir);
    if (!hooked) {
      hooked = true;
      atProcessEnd(() => { for (const d of live) rmSync(d, { recursive: true, force: true }); });
    }
  }

  /** A private folder under /dev/shm, or null where there is none (not Linux). */
  static create(): ShmDir | null {
    if (!existsSync('/dev/shm')) return null;
    try {
      return new ShmDir(mkdtempSync('/dev/shm/liaison-'));
    } catch {
      return null;
    }
  }

  /**
   * Write bytes to a new file; returns its path for an `upload` op, or null when the write
   * failed (/dev/shm full or gone): the caller then sends the bytes over the socket.
   */
  tryWrite(bytes: Uint8Array): string | null {
    const path = join(this.dir, `u${this.n++}`);
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        let off = 0;
        while (off < bytes.byteLength) off += writeSync(fd, bytes, off, bytes.byteLength - off);
      } finally {
        closeSync(fd);
      }
      return path;
    } catch {
      rmSync(path, { force: true });
      return null;
    }
  }

  /** Read a file the runtime wrote for a read, and remove it. */
  take(path: string): Uint8Array {
    if (!path.startsWith(this.dir + '/')) throw new Error(`runtime named a shared-memory file outside ${this.dir}: ${path}`);
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const out = Buffer.allocUnsafeSlow(size); // own ArrayBuffer: offset 0, aligned views
      let off = 0;
      while (off < size) {
        const n = readSync(fd, out, off, size - off, off);
        if (n === 0) break;
        off += n;
      }
      return out;
    } finally {
      closeSync(fd);
      unlinkSync(path);
    }
  }

  remove(): void {
    live.delete(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
