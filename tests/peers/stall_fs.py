#!/usr/bin/env python3
"""A disk that stalls: a FUSE file system passing everything through to a directory, except
that while the flag file exists every write (and fsync) waits until it is removed.

    stall_fs.py BACKING_DIR MOUNT_POINT FLAG_FILE

It stands in for a USB stick or SD card that stops answering (a worn card's garbage
collection, a hub that hangs): the writer blocks in the kernel, as it would on a real device.
The host has FUSE but no device-mapper (dm-delay), hence this. Uses Debian's python3-fusepy
(libfuse2), run with the system python3; mounts as root without fusermount. Prints
"READY" once the mount answers, and unmounts on SIGINT/SIGTERM.
"""

import errno
import os
import sys
import threading
import time

try:
    from fusepy import FUSE, FuseOSError, Operations  # Debian's name for it
except ImportError:
    from fuse import FUSE, FuseOSError, Operations

# A stalled write re-checks the flag this often.
POLL_S = 0.05


class StallFs(Operations):
    def __init__(self, root: str, flag: str):
        self.root = os.path.realpath(root)
        self.flag = flag

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _stall(self) -> None:
        while os.path.exists(self.flag):
            time.sleep(POLL_S)

    def __call__(self, op, path, *args):
        try:
            return super().__call__(op, path, *args)
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO)

    # --- metadata
    def getattr(self, path, fh=None):
        st = os.lstat(self._path(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._path(path))

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
                "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._path(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._path(path), times)

    def mkdir(self, path, mode):
        os.mkdir(self._path(path), mode)

    def rmdir(self, path):
        os.rmdir(self._path(path))

    def unlink(self, path):
        os.unlink(self._path(path))

    def rename(self, old, new):
        os.rename(self._path(old), self._path(new))

    def truncate(self, path, length, fh=None):
        with open(self._path(path), "r+b") as f:
            f.truncate(length)

    # --- files
    def create(self, path, mode, fi=None):
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def open(self, path, flags):
        return os.open(self._path(path), flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self._stall()
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        self._stall()
        os.fsync(fh)
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    root, mount, flag = sys.argv[1:]

    def ready():
        # The mount answers once FUSE's loop runs: wait for it from a helper thread.
        for _ in range(200):
            if os.path.ismount(mount):
                print("READY", flush=True)
                return
            time.sleep(0.05)
        print("FAILED: not mounted after 10 s", flush=True)

    threading.Thread(target=ready, daemon=True).start()
    # Threads: a stalled write must not hold up statfs, unlink or a second file.
    FUSE(StallFs(root, flag), mount, foreground=True, nothreads=False, allow_other=True,
         big_writes=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
