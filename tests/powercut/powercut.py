#!/usr/bin/env python3
"""A FUSE file system that can lose power: what was not made durable is gone after a cut.

The agent's crash safety rests on POSIX's ordering rules (write, fsync the file, fsync the
directory of a new name, and only then commit the catalog row). A kill -9 does not test them:
the kernel's page cache keeps every write of a killed process. This file system keeps
everything that is not yet durable in memory, so cutting its power loses exactly that, the way a
disk would (LazyFS's idea, kept small).

The model
---------
Every inode holds two states: the visible one, which every operation through the mount reads
and changes at once, and the durable one, which changes only at a sync:

* a regular file's data, size and mode become durable at an ``fsync``/``fdatasync`` on any
  descriptor of it (a file never synced is durable as empty, with the mode it was created with);
* a directory's entries (names created, renamed, hard-linked or removed in it) become durable
  at an ``fsync`` of the directory (``File::open(dir).sync_all()`` in Rust); the names'
  inodes come along with their durable contents, not their visible ones;
* a rename or move between two directories is durable as a whole at the fsync of either of
  them, as on a journalling file system: the old name is not left behind beside the new one,
  nor is the inode left with no name at all. The same holds for a hard link followed by an
  unlink, which is how a move looks from the inside.

The backing directory is the disk: it always holds exactly the durable state reachable from
the root (the durable names, each with its durable content), and nothing else. It is updated
when something becomes durable, so at any instant it is what a disk would hold after a power
cut. Durable contents that no durable name reaches (a synced file whose name is not synced
yet) live in memory only: they appear in the backing directory if and when their name becomes
durable. Times are not part of the durable state.

Stopping it
-----------
* ``cut``: the power is cut. From that instant nothing reaches the backing directory again:
  every later operation, and every one waiting in a stall, fails with EIO (one already changing
  the disk finishes first); the mount is detached lazily and the process exits, after which the
  kernel answers ENOTCONN. What a process still held in dirty mmap pages is lost with the rest.
* SIGKILL of the process is a cut too (an operation caught halfway through changing the backing
  directory may be torn); the dead mount then stays until ``fusermount3 -u -z``.
* ``unmount``, SIGTERM, or ``fusermount3 -u``: a clean shutdown, as a machine unmounting its
  disks: everything visible is made durable first, then the process exits.

The control socket (``--control``) takes one command per connection, a line, and answers
``ok`` (with JSON for ``stats``) or ``error: ...``: ``cut``, ``unmount``, ``stall SECONDS``
(from then on every operation that changes something -- writes, truncations, syncs, creations,
renames, removals -- waits SECONDS before it proceeds, while reads and lookups answer at
once), ``unstall`` (ends the stall and releases every waiting operation at once), ``trap OP
SUFFIX [after OP2 SUFFIX2]`` (the next operation OP on a path ending in SUFFIX, once an OP2 on
a path ending in SUFFIX2 has completed when that is given, ``*`` matching any path, starts a
stall without end: it waits, unapplied, with every changing operation after it, until
``unstall`` or a cut; so a test can cut the power at an exact step of a program's ordering,
such as between a file's fsync and the commit that indexes it), and ``stats`` (counts of syncs
and of operations waiting in a stall, and ``trapped``, the operation a trap caught:
``"fsync /a/b.mkv"``). OP is one of write, truncate, fsync, fsyncdir, create, mkdir, unlink,
rmdir, rename (matched on its source path).

A stall holds the writers only, as a disk's would, because the kernel keeps no page cache of
these files (``direct_io``): a cached page being written is locked until its write returns, and
the kernel invalidates the cache at each ``open`` (and when the size changes), so a held write
would hold every reader that opens the file. The exception is a file whose name ends in
``-shm``: SQLite's WAL index, which it maps shared (which needs the page cache) and never
syncs. Its writes (the kernel writing the mapped pages back) do not wait in a stall.

What FUSE needs for SQLite: the page cache for -shm (above), and no ``lock`` operation, so
that the kernel keeps POSIX byte-range locks itself (right for one mount). A reader should open
its connection before a stall: SQLite, as root, fchowns the WAL at each open, and the kernel
holds the WAL's inode lock through a write or fsync it has sent here, so that open would wait.

Limits: the data lives in memory, twice (visible and durable), which suits tests of tens of MB;
no extended attributes; libfuse's path API gives each name of a hard-linked file a kernel inode
of its own, so an mmap through one name does not see writes through another.

Usage::

    powercut.py mount BACKING MOUNTPOINT [--control SOCKET]   # prints READY once mounted
    powercut.py cut|unmount|unstall|stats SOCKET
    powercut.py stall SOCKET SECONDS
    powercut.py trap SOCKET OP SUFFIX [after OP2 SUFFIX2]
"""

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
FALLOC_FL_KEEP_SIZE = 1
# A trap's stall: "without end", within what threading's waits accept.
TRAP_SECONDS = 10.0**6


class Inode:
    """One file, directory, symbolic link or special file: its visible and durable states.

    ``links`` and ``d_links`` are the (directory, name) pairs that name it, visibly and
    durably; ``entries`` and ``d_entries`` are a directory's names. ``dirty`` is the one byte
    range ``[lo, hi)`` of ``data`` written since the last sync: every byte outside it equals
    ``d_data`` at the same offset, which is what makes a sync cost the range, not the file.
    """

    __slots__ = (
        "ino", "mode", "uid", "gid", "atime", "mtime", "ctime", "target",
        "data", "dirty", "entries", "links",
        "d_data", "d_entries", "d_links", "d_mode", "d_uid", "d_gid",
    )

    def __init__(self, ino, mode, uid, gid, target=None):
        now = time.time_ns()
        self.ino = ino
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.atime = self.mtime = self.ctime = now
        self.target = target
        self.data = bytearray() if stat.S_ISREG(mode) else None
        self.d_data = bytearray() if stat.S_ISREG(mode) else None
        self.dirty = None
        self.entries = {} if stat.S_ISDIR(mode) else None
        self.d_entries = {} if stat.S_ISDIR(mode) else None
        self.links = set()
        self.d_links = set()
        self.d_mode, self.d_uid, self.d_gid = mode, uid, gid

    def is_dir(self):
        return stat.S_ISDIR(self.mode)

    def is_file(self):
        return stat.S_ISREG(self.mode)

    def mark(self, lo, hi):
        """Records that ``data[lo:hi]`` changed (or came into being) since the last sync."""
        if self.dirty is None:
            self.dirty = (lo, hi)
        else:
            self.dirty = (min(self.dirty[0], lo), max(self.dirty[1], hi))

    def touch(self):
        self.mtime = self.ctime = time.time_ns()


def _matches(path, suffix):
    """A trap's path test: ``*`` matches every path."""
    return suffix == "*" or path.endswith(suffix)


def _os_error(code):
    return OSError(code, os.strerror(code))


class PowerCut:
    """The file system's state and its operations, as mfusepy calls them (paths and handles).

    One lock guards the state; a stalled operation waits before it takes the lock, so reads go
    on during a stall.
    """

    def __init__(self, backing, mountpoint):
        self.backing = os.path.abspath(backing)
        self.mountpoint = os.path.abspath(mountpoint)
        self.use_ns = True
        self._lock = threading.Lock()
        self._handles = {}
        self._next_fh = 1
        self._next_ino = 1
        self._frozen = False
        self._stall = threading.Condition()
        self._stall_seconds = 0.0
        self._stall_generation = 0
        self._stalled = 0
        # (op, suffix, after): after is None or the (op, suffix) that must complete first.
        self._trap = None
        self._trapped = None
        self.counts = {"fsync": 0, "fsyncdir": 0}
        self.exiting = threading.Event()
        self.mounted = False
        self.root = self._load()

    # --- the disk at start: the backing directory as it is -------------------------------

    def _new_inode(self, mode, uid, gid, target=None):
        node = Inode(self._next_ino, mode, uid, gid, target)
        self._next_ino += 1
        return node

    def _load(self):
        """Reads the backing directory into inodes whose visible and durable states agree."""
        by_id = {}

        def load(path):
            st = os.lstat(path)
            key = (st.st_dev, st.st_ino)
            if key in by_id:
                return by_id[key]
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            node = self._new_inode(st.st_mode, st.st_uid, st.st_gid, target)
            node.atime, node.mtime, node.ctime = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
            if node.is_file():
                with open(path, "rb") as f:
                    content = f.read()
                node.data = bytearray(content)
                node.d_data = bytearray(content)
                by_id[key] = node
            elif node.is_dir():
                for name in sorted(os.listdir(path)):
                    child = load(os.path.join(path, name))
                    node.entries[name] = node.d_entries[name] = child
                    child.links.add((node, name))
                    child.d_links.add((node, name))
            return node

        return load(self.backing)

    # --- the disk: keeping the backing directory equal to the durable state ---------------

    def _dpath(self, node, depth=0):
        """The durable path of a directory from the root, or None if no durable name reaches it."""
        if node is self.root:
            return self.backing
        if depth > 200:
            return None
        for parent, name in node.d_links:
            base = self._dpath(parent, depth + 1)
            if base is not None:
                return os.path.join(base, name)
        return None

    def _dpaths(self, node):
        """Every durable path of a file (hard links give several)."""
        paths = []
        for parent, name in node.d_links:
            base = self._dpath(parent)
            if base is not None:
                paths.append(os.path.join(base, name))
        return paths

    @staticmethod
    def _remove(path):
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)

    def _materialize(self, node, path):
        """Writes ``node``'s durable state at ``path`` in the backing directory."""
        self._remove(path)
        if node.is_dir():
            os.mkdir(path, 0o700)
            for name, child in node.d_entries.items():
                self._materialize(child, os.path.join(path, name))
        elif node.is_file():
            twin = next((p for p in self._dpaths(node) if p != path and os.path.isfile(p)), None)
            if twin is not None:
                os.link(twin, path)
                return
            with open(path, "wb") as f:
                f.write(node.d_data)
        elif stat.S_ISLNK(node.mode):
            os.symlink(node.target, path)
            return
        else:
            os.mknod(path, node.d_mode)
        os.chmod(path, stat.S_IMODE(node.d_mode))
        os.lchown(path, node.d_uid, node.d_gid)

    def _sync_inode(self, node):
        """fsync of a file: its data, size, mode and owner become durable."""
        node.d_mode, node.d_uid, node.d_gid = node.mode, node.uid, node.gid
        paths = self._dpaths(node) if node is not self.root else [self.backing]
        if node.is_file() and node.dirty is not None:
            size = len(node.data)
            hi = min(node.dirty[1], size)
            lo = min(node.dirty[0], hi)
            node.dirty = None
            durable = node.d_data
            if len(durable) > size:
                del durable[size:]
            else:
                durable.extend(bytes(size - len(durable)))
            durable[lo:hi] = node.data[lo:hi]
            seen = set()
            for path in paths:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                with open(path, "r+b") as f:
                    f.truncate(size)
                    f.seek(lo)
                    f.write(durable[lo:hi])
        for path in paths:
            if not stat.S_ISLNK(node.mode):
                os.chmod(path, stat.S_IMODE(node.d_mode))
            os.lchown(path, node.d_uid, node.d_gid)

    def _sync_dir(self, directory):
        """fsync of a directory: its entries become durable, with any move they take part in."""
        self._sync_inode(directory)
        todo = [(directory, name) for name in set(directory.entries) | set(directory.d_entries)]
        done = set()
        while todo:
            parent, name = todo.pop()
            if (parent, name) in done:
                continue
            done.add((parent, name))
            todo.extend(self._sync_entry(parent, name))

    def _sync_entry(self, parent, name):
        """Makes one name durable as it is visible; returns the names of the moves it completes.

        An inode leaving this name and still visible under a name that is not durable was moved
        there; an inode arriving here and still durable under a name it no longer has was moved
        from there. Those other names become durable with this one.
        """
        old = parent.d_entries.get(name)
        new = parent.entries.get(name)
        if old is new:
            return []
        base = self._dpath(parent)
        path = None if base is None else os.path.join(base, name)
        companions = []
        if old is not None:
            del parent.d_entries[name]
            old.d_links.discard((parent, name))
            companions += [link for link in old.links if link not in old.d_links]
            if path is not None:
                self._remove(path)
        if new is not None:
            parent.d_entries[name] = new
            new.d_links.add((parent, name))
            companions += [link for link in new.d_links if link not in new.links]
            if path is not None:
                self._materialize(new, path)
        return companions

    def _sync_all(self):
        """A clean shutdown: every visible file and directory becomes durable, data first."""
        nodes, stack, seen = [], [self.root], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            nodes.append(node)
            if node.is_dir():
                stack.extend(node.entries.values())
        for node in nodes:
            if not node.is_dir():
                self._sync_inode(node)
        for node in nodes:
            if node.is_dir():
                self._sync_dir(node)

    # --- power, stalls, and the control channel -------------------------------------------

    def cut(self):
        """Cuts the power: nothing reaches the disk from now on, and what was volatile is gone."""
        with self._lock:
            self._frozen = True
        self._release_stalled()

    def shutdown(self):
        """A clean unmount's first half: everything becomes durable, then nothing changes."""
        with self._lock:
            if not self._frozen:
                self._sync_all()
                self._frozen = True
        self._release_stalled()

    def stopped(self):
        """Whether the power was cut or the file system shut down: nothing changes any more."""
        with self._lock:
            return self._frozen

    def set_stall(self, seconds):
        with self._stall:
            self._stall_seconds = seconds
            if seconds <= 0:
                self._stall_generation += 1
                self._stall.notify_all()

    def _release_stalled(self):
        with self._stall:
            self._stall_generation += 1
            self._stall.notify_all()

    def set_trap(self, op, suffix, after=None):
        with self._stall:
            self._trap = (op, suffix, after)
            self._trapped = None

    def _spring(self, op, path):
        """Starts the trap's endless stall when ``op`` on ``path`` is the one it waits for."""
        with self._stall:
            trap = self._trap
            if trap and trap[2] is None and trap[0] == op and _matches(path, trap[1]):
                self._trap = None
                self._trapped = f"{op} {path}"
                self._stall_seconds = TRAP_SECONDS

    def _completed(self, op, path):
        """Arms a trap whose first step (``after``) this operation was."""
        with self._stall:
            trap = self._trap
            if trap and trap[2] and trap[2][0] == op and _matches(path, trap[2][1]):
                self._trap = (trap[0], trap[1], None)

    def stats(self):
        with self._stall:
            stalled, trapped = self._stalled, self._trapped
        with self._lock:
            return dict(self.counts, stalled=stalled, cut=self._frozen, trapped=trapped)

    def _wait_if_stalled(self):
        """Holds a changing operation for the stall's time, or until unstall or a cut."""
        with self._stall:
            if self._stall_seconds <= 0 or self._frozen:
                return
            generation = self._stall_generation
            deadline = time.monotonic() + self._stall_seconds
            self._stalled += 1
            try:
                while self._stall_generation == generation:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._stall.wait(left)
            finally:
                self._stalled -= 1

    @contextlib.contextmanager
    def _reading(self):
        with self._lock:
            if self._frozen:
                raise _os_error(errno.EIO)
            yield

    def _vpath(self, node, depth=0):
        """A visible path of ``node`` from the root (``/a/b``), or None if no name reaches it."""
        if node is self.root:
            return ""
        if depth > 200:
            return None
        for parent, name in node.links:
            base = self._vpath(parent, depth + 1)
            if base is not None:
                return f"{base}/{name}"
        return None

    def _path_of(self, path, fh):
        """The path of a call, which libfuse leaves out of the calls on an open handle; looked
        up only while a trap or a stall needs it."""
        if path or fh is None or self._trap is None and self._stall_seconds <= 0:
            return path or ""
        with self._lock:
            node = self._handles.get(fh)
            return (self._vpath(node) if node else None) or ""

    @contextlib.contextmanager
    def _changing(self, op=None, path=None, fh=None):
        path = self._path_of(path, fh)
        self._spring(op, path)
        if not path.endswith("-shm"):
            self._wait_if_stalled()
        with self._reading():
            yield
        self._completed(op, path)

    # --- the name space ---------------------------------------------------------------

    def _lookup(self, path):
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not node.is_dir():
                raise _os_error(errno.ENOTDIR)
            node = node.entries.get(part)
            if node is None:
                raise _os_error(errno.ENOENT)
        return node

    def _parent(self, path):
        head, name = os.path.split(path.rstrip("/"))
        parent = self._lookup(head)
        if not parent.is_dir():
            raise _os_error(errno.ENOTDIR)
        if len(os.fsencode(name)) > 255:
            raise _os_error(errno.ENAMETOOLONG)
        return parent, name

    def _node(self, path, fh):
        if fh is not None and fh in self._handles:
            return self._handles[fh]
        if path is None:
            raise _os_error(errno.EBADF)
        return self._lookup(path)

    @staticmethod
    def _link(parent, name, node):
        parent.entries[name] = node
        node.links.add((parent, name))
        parent.touch()

    @staticmethod
    def _unlink(parent, name):
        node = parent.entries.pop(name)
        node.links.discard((parent, name))
        node.ctime = time.time_ns()
        parent.touch()
        return node

    def _caller(self):
        """The uid and gid of the process asking (the FUSE request's, once mounted)."""
        return os.geteuid(), os.getegid()

    def _handle(self, node):
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = node
        return fh

    def _create(self, path, mode, target=None):
        parent, name = self._parent(path)
        if name in parent.entries:
            raise _os_error(errno.EEXIST)
        uid, gid = self._caller()
        node = self._new_inode(mode, uid, gid, target)
        self._link(parent, name, node)
        return node

    # --- the operations ---------------------------------------------------------------

    def init_with_config(self, _conn, config):
        """Paths may be null for handles (an unlinked open file has none), and unlink is real."""
        config.nullpath_ok = 1
        config.hard_remove = 1
        config.use_ino = 1
        self.mounted = True
        print("READY", flush=True)

    def destroy(self, _path):
        self.shutdown()

    def getattr(self, path, fh=None):
        with self._reading():
            node = self._node(path, fh)
            if node.is_dir():
                nlink = 2 + sum(1 for c in node.entries.values() if c.is_dir())
                size = 4096
            else:
                nlink = len(node.links)
                size = len(node.data) if node.is_file() else len(os.fsencode(node.target or ""))
            return {
                "st_ino": node.ino, "st_mode": node.mode, "st_nlink": nlink,
                "st_uid": node.uid, "st_gid": node.gid, "st_size": size,
                "st_blocks": (size + 511) // 512, "st_blksize": 4096,
                "st_atime": node.atime, "st_mtime": node.mtime, "st_ctime": node.ctime,
            }

    def statfs(self, _path):
        return {
            "f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19,
            "f_bavail": 1 << 19, "f_files": 1 << 20, "f_ffree": 1 << 19, "f_favail": 1 << 19,
            "f_namemax": 255,
        }

    def opendir(self, path):
        with self._reading():
            node = self._lookup(path)
            if not node.is_dir():
                raise _os_error(errno.ENOTDIR)
            return self._handle(node)

    def readdir(self, path, fh):
        with self._reading():
            node = self._node(path, fh)
            return [".", ".."] + [
                (name, {"st_mode": child.mode, "st_ino": child.ino}, 0)
                for name, child in node.entries.items()
            ]

    def releasedir(self, _path, fh):
        with self._lock:
            self._handles.pop(fh, None)

    def fsyncdir(self, path, _datasync, fh):
        with self._changing("fsyncdir", path, fh):
            self.counts["fsyncdir"] += 1
            self._sync_dir(self._node(path, fh))

    def readlink(self, path):
        with self._reading():
            node = self._lookup(path)
            if not stat.S_ISLNK(node.mode):
                raise _os_error(errno.EINVAL)
            return node.target

    def mkdir(self, path, mode):
        with self._changing("mkdir", path):
            self._create(path, stat.S_IFDIR | stat.S_IMODE(mode))

    def mknod(self, path, mode, _dev):
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise _os_error(errno.EPERM)
        with self._changing():
            self._create(path, mode)

    def symlink(self, path, target):
        with self._changing():
            self._create(path, stat.S_IFLNK | 0o777, target)

    def create(self, path, mode, flags):
        with self._changing("create", path):
            try:
                node = self._create(path, stat.S_IFREG | stat.S_IMODE(mode))
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                node = self._lookup(path)
                self._truncate_on_open(node, flags)
            return self._handle(node)

    def open(self, path, flags):
        if flags & os.O_TRUNC:
            self._wait_if_stalled()
        with self._reading():
            node = self._lookup(path)
            self._truncate_on_open(node, flags)
            return self._handle(node)

    def _truncate_on_open(self, node, flags):
        if flags & os.O_TRUNC and node.is_file() and flags & os.O_ACCMODE != os.O_RDONLY:
            self._resize(node, 0)

    def release(self, _path, fh):
        with self._lock:
            self._handles.pop(fh, None)

    def read(self, path, size, offset, fh):
        with self._reading():
            node = self._node(path, fh)
            if node.is_dir():
                raise _os_error(errno.EISDIR)
            return bytes(node.data[offset:offset + size])

    def write(self, path, data, offset, fh):
        with self._changing("write", path, fh):
            node = self._node(path, fh)
            end = offset + len(data)
            current = len(node.data)
            if offset > current:
                node.data.extend(bytes(offset - current))
            node.data[offset:end] = data
            node.mark(min(offset, current), end)
            node.touch()
            return len(data)

    def _resize(self, node, size):
        current = len(node.data)
        if size < current:
            del node.data[size:]
        elif size > current:
            node.data.extend(bytes(size - current))
            node.mark(current, size)
        else:
            return
        if node.dirty is None:
            node.dirty = (size, size)
        node.touch()

    def truncate(self, path, length, fh=None):
        with self._changing("truncate", path, fh):
            node = self._node(path, fh)
            if not node.is_file():
                raise _os_error(errno.EISDIR if node.is_dir() else errno.EINVAL)
            self._resize(node, length)

    def fallocate(self, path, mode, offset, size, fh):
        with self._changing():
            node = self._node(path, fh)
            if mode & ~FALLOC_FL_KEEP_SIZE or not node.is_file():
                raise _os_error(errno.EOPNOTSUPP)
            if not mode & FALLOC_FL_KEEP_SIZE and offset + size > len(node.data):
                self._resize(node, offset + size)

    def fsync(self, path, _datasync, fh):
        with self._changing("fsync", path, fh):
            self.counts["fsync"] += 1
            self._sync_inode(self._node(path, fh))

    def unlink(self, path):
        with self._changing("unlink", path):
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise _os_error(errno.ENOENT)
            if node.is_dir():
                raise _os_error(errno.EISDIR)
            self._unlink(parent, name)

    def rmdir(self, path):
        with self._changing("rmdir", path):
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise _os_error(errno.ENOENT)
            if not node.is_dir():
                raise _os_error(errno.ENOTDIR)
            if node.entries:
                raise _os_error(errno.ENOTEMPTY)
            self._unlink(parent, name)

    def rename(self, old, new, flags=0):
        with self._changing("rename", old):
            if flags & ~RENAME_NOREPLACE:
                raise _os_error(errno.EINVAL)
            src_dir, src_name = self._parent(old)
            dst_dir, dst_name = self._parent(new)
            node = src_dir.entries.get(src_name)
            if node is None:
                raise _os_error(errno.ENOENT)
            victim = dst_dir.entries.get(dst_name)
            if victim is node:
                return
            if victim is not None:
                if flags & RENAME_NOREPLACE:
                    raise _os_error(errno.EEXIST)
                if node.is_dir() and not victim.is_dir():
                    raise _os_error(errno.ENOTDIR)
                if victim.is_dir() and not node.is_dir():
                    raise _os_error(errno.EISDIR)
                if victim.is_dir() and victim.entries:
                    raise _os_error(errno.ENOTEMPTY)
                self._unlink(dst_dir, dst_name)
            self._unlink(src_dir, src_name)
            self._link(dst_dir, dst_name, node)

    def link(self, path, existing):
        with self._changing():
            node = self._lookup(existing)
            if node.is_dir():
                raise _os_error(errno.EPERM)
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _os_error(errno.EEXIST)
            self._link(parent, name, node)
            node.ctime = time.time_ns()

    def chmod(self, path, mode, fh=None):
        with self._changing():
            node = self._node(path, fh)
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
            node.ctime = time.time_ns()

    def chown(self, path, uid, gid, fh=None):
        with self._reading():
            node = self._node(path, fh)
            if uid in (-1, node.uid) and gid in (-1, node.gid):
                # Nothing changes, so nothing waits in a stall: SQLite, as root, fchowns its
                # -wal and -shm to the database's owner at every open, readers' too.
                return
        with self._changing():
            node = self._node(path, fh)
            if uid != -1:
                node.uid = uid
            if gid != -1:
                node.gid = gid
            node.ctime = time.time_ns()

    def utimens(self, path, times, fh=None):
        """``times`` holds (seconds, nanoseconds) for atime and mtime, with UTIME_NOW/OMIT."""
        with self._changing():
            node = self._node(path, fh)
            now = time.time_ns()
            for attr, (sec, nsec) in zip(("atime", "mtime"), times):
                if nsec == UTIME_NOW:
                    setattr(node, attr, now)
                elif nsec != UTIME_OMIT:
                    setattr(node, attr, sec * 10**9 + nsec)
            node.ctime = now


def _fuse_class():
    """mfusepy's FUSE, passing the handles and flags that its libfuse 3 wrappers drop.

    mfusepy calls truncate, chmod, chown and utimens without the file handle, and rename
    without its flags; with null paths for handles (nullpath_ok), an ftruncate of an unlinked
    file would otherwise name no file at all.
    """
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    def fh_of(fip):
        return fip.contents.fh if fip else None

    def path_of(self, path):
        return None if path is None else path.decode(self.encoding, self.errors)

    class FUSE(mfusepy.FUSE):
        def truncate_fuse_3(self, path, length, fip):
            return self.operations.truncate(path_of(self, path), length, fh_of(fip))

        def chmod_fuse_3(self, path, mode, fip):
            return self.operations.chmod(path_of(self, path), mode, fh_of(fip))

        def chown_fuse_3(self, path, uid, gid, fip):
            if mfusepy.c_uid_t(uid + 1).value == 0:
                uid = -1
            if mfusepy.c_gid_t(gid + 1).value == 0:
                gid = -1
            return self.operations.chown(path_of(self, path), uid, gid, fh_of(fip))

        def utimens_fuse_3(self, path, buf, fip):
            if buf:
                pair = buf.contents
                times = tuple((ts.tv_sec, ts.tv_nsec) for ts in (pair.actime, pair.modtime))
            else:
                times = ((0, UTIME_NOW), (0, UTIME_NOW))
            return self.operations.utimens(path_of(self, path), times, fh_of(fip))

        def rename_fuse_3(self, old, new, flags):
            return self.operations.rename(path_of(self, old), path_of(self, new), flags)

        def open(self, path, fip):
            result = super().open(path, fip)
            uncached(path, fip)
            return result

        def create(self, path, mode, fip):
            result = super().create(path, mode, fip)
            uncached(path, fip)
            return result

    def uncached(path, fip):
        """Direct I/O for every file but SQLite's -shm, which it maps shared (see the stall)."""
        if not path.endswith(b"-shm"):
            fip.contents.direct_io = 1

    class Operations(PowerCut, mfusepy.Operations):
        def _caller(self):
            uid, gid, _pid = mfusepy.fuse_get_context()
            return uid, gid

    return FUSE, Operations


def _serve_control(fs, path):
    """Answers the control socket, one command per connection, on a thread of its own."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def detach_and_exit(conn, reply):
        fs.exiting.set()
        subprocess.run(["fusermount3", "-u", "-z", fs.mountpoint], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        conn.sendall(reply)
        conn.close()
        sys.stdout.flush()
        os._exit(0)

    def serve():
        while True:
            conn, _ = server.accept()
            conn.settimeout(10)
            with conn:
                line = conn.makefile("rb").readline().decode().split()
                try:
                    command, args = line[0], line[1:]
                    if command == "cut":
                        fs.cut()
                        detach_and_exit(conn, b"ok\n")
                    elif command == "unmount":
                        fs.shutdown()
                        detach_and_exit(conn, b"ok\n")
                    elif command == "stall":
                        fs.set_stall(float(args[0]))
                        reply = "ok"
                    elif command == "unstall":
                        fs.set_stall(0)
                        reply = "ok"
                    elif command == "trap":
                        reply = _trap(fs, args)
                    elif command == "stats":
                        reply = "ok " + json.dumps(fs.stats())
                    else:
                        reply = f"error: unknown command {command}"
                except (IndexError, ValueError) as e:
                    reply = f"error: {e}"
                conn.sendall(reply.encode() + b"\n")

    threading.Thread(target=serve, name="control", daemon=True).start()


TRAP_OPS = {"write", "truncate", "fsync", "fsyncdir", "create", "mkdir", "unlink", "rmdir",
            "rename"}


def _trap(fs, args):
    """``trap OP SUFFIX [after OP2 SUFFIX2]``, checked word by word."""
    shape = len(args) == 2 or len(args) == 5 and args[2] == "after"
    if not shape:
        return "error: usage: trap OP SUFFIX [after OP2 SUFFIX2]"
    unknown = [op for op in args[0:1] + args[3:4] if op not in TRAP_OPS]
    if unknown:
        return f"error: trap: unknown operation {unknown[0]} (one of {', '.join(sorted(TRAP_OPS))})"
    fs.set_trap(args[0], args[1], tuple(args[3:5]) or None)
    return "ok"


def mount(backing, mountpoint, control):
    """Mounts in the foreground until cut or unmounted."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fuse_class, operations_class = _fuse_class()
    fs = operations_class(backing, mountpoint)
    if control:
        _serve_control(fs, control)
    options = dict(foreground=True, fsname="powercut", subtype="powercut",
                   default_permissions=True, max_threads=64, max_idle_threads=8)
    if os.geteuid() == 0:
        options["allow_other"] = True
    try:
        fuse_class(fs, mountpoint, **options)
    except RuntimeError as e:
        # libfuse answers 8 after a SIGTERM; once mounted and shut down cleanly, that is success.
        if not (fs.mounted and fs.stopped()):
            sys.exit(f"powercut: libfuse failed ({e})")
    if fs.exiting.is_set():
        # The detach ended the FUSE loop; the control thread answers its client and exits.
        threading.Event().wait()
    if control:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control)


def request(control, command):
    """Sends one command to a mounted instance and returns its answer (raises on an error)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(control)
        conn.sendall(command.encode() + b"\n")
        reply = conn.makefile("rb").readline().decode().strip()
    if not reply.startswith("ok"):
        raise RuntimeError(f"powercut {command}: {reply or 'no answer'}")
    return reply[2:].strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mount", help="mount BACKING at MOUNTPOINT in the foreground")
    m.add_argument("backing")
    m.add_argument("mountpoint")
    m.add_argument("--control", help="Unix socket for the commands")
    for name in ("cut", "unmount", "unstall", "stats"):
        sub.add_parser(name).add_argument("socket")
    s = sub.add_parser("stall")
    s.add_argument("socket")
    s.add_argument("seconds", type=float)
    t = sub.add_parser("trap")
    t.add_argument("socket")
    t.add_argument("words", nargs="+", help="OP SUFFIX [after OP2 SUFFIX2]")
    args = parser.parse_args()
    if args.command == "mount":
        mount(args.backing, args.mountpoint, args.control)
    elif args.command == "stall":
        request(args.socket, f"stall {args.seconds}")
    elif args.command == "trap":
        request(args.socket, " ".join(["trap", *args.words]))
    else:
        answer = request(args.socket, args.command)
        if answer:
            print(answer)


if __name__ == "__main__":
    main()
