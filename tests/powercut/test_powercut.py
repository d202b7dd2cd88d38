#!/usr/bin/env python3
"""The power-cut file system's own tests: each durability rule, SQLite in WAL mode, and stalls.

Every test mounts a fresh instance over a backing directory of its own, and unmounts it
whatever happens. After a cut, what survived is read through a new mount of the same backing
directory, as the agent would read its disk after the power came back.

Run: python3 tests/powercut/test_powercut.py
"""

import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
POWERCUT = os.path.join(HERE, "powercut.py")
sys.path.insert(0, HERE)

import powercut  # noqa: E402  (the client half, which needs no FUSE binding)

DEADLINE = 20.0


def mounted(path):
    """Whether ``path`` is a mount point, dead or alive (``os.path.ismount`` misses a dead one)."""
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data, sync=False, mode="wb"):
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def durable_file(path, data):
    """A file as the agent leaves one: written, fsynced, and its name fsynced into its directory."""
    write_file(path, data, sync=True)
    fsync_dir(os.path.dirname(path))


class Instance:
    """One mounted powercut.py over ``backing``, with its control socket."""

    def __init__(self, workdir, backing, n):
        self.backing = backing
        self.mnt = os.path.join(workdir, f"mnt{n}")
        self.control = os.path.join(workdir, f"control{n}.sock")
        self.log = open(os.path.join(workdir, f"powercut{n}.log"), "w+")
        os.mkdir(self.mnt)
        self.proc = subprocess.Popen(
            [sys.executable, POWERCUT, "mount", backing, self.mnt, "--control", self.control],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )

    def await_ready(self):
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(DEADLINE):
                raise AssertionError(f"no READY within {DEADLINE}s: {self.stderr()}")
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            raise AssertionError(f"powercut.py said {line!r}, not READY: {self.stderr()}")
        if not mounted(self.mnt):
            raise AssertionError(f"READY but {self.mnt} is not mounted")

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def request(self, command):
        return powercut.request(self.control, command)

    def stats(self):
        return json.loads(self.request("stats"))

    def cut(self):
        """Cuts the power and waits for the instance to be gone."""
        self.request("cut")
        self.proc.wait(DEADLINE)
        assert not mounted(self.mnt), "still mounted after the cut"

    def stop(self):
        """Unmounts and ends the process, whatever state it is in (the tests' cleanup); returns
        what it logged. A cut comes first, as it also releases operations held by a stall."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError):
                self.request("cut")
        if mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False)
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        log = self.stderr()
        self.log.close()
        return log


class PowerCutTest(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="powercut-")
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)
        self.backing = os.path.join(self.workdir, "disk")
        os.mkdir(self.backing)
        self.mounts = 0

    def mount(self):
        """A fresh instance over this test's backing directory, stopped at the test's end."""
        self.mounts += 1
        instance = Instance(self.workdir, self.backing, self.mounts)
        self.addCleanup(self.stop, instance)
        instance.await_ready()
        return instance

    def stop(self, instance):
        log = instance.stop()
        self.assertNotIn("Traceback", log, f"an operation of powercut.py failed:\n{log}")

    def after_cut(self, fs):
        """Cuts ``fs``'s power and mounts the disk again."""
        fs.cut()
        return self.mount()

    def test_1_unsynced_append_is_lost_synced_one_kept(self):
        fs = self.mount()
        durable_file(fs.path("lost"), b"A" * 100)
        durable_file(fs.path("kept"), b"A" * 100)
        write_file(fs.path("lost"), b"B" * 50, mode="ab")
        write_file(fs.path("kept"), b"B" * 50, mode="ab", sync=True)
        self.assertEqual(read_file(fs.path("lost")), b"A" * 100 + b"B" * 50, "visible at once")
        self.assertEqual(os.path.getsize(fs.path("lost")), 150)
        self.assertEqual(read_file(os.path.join(self.backing, "lost")), b"A" * 100, "disk")
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("lost")), b"A" * 100)
        self.assertEqual(read_file(fs.path("kept")), b"A" * 100 + b"B" * 50)

    def test_2_new_file_needs_its_directory_synced(self):
        fs = self.mount()
        os.mkdir(fs.path("d"))
        fsync_dir(fs.mnt)
        write_file(fs.path("d", "named"), b"data", sync=True)
        fsync_dir(fs.path("d"))
        write_file(fs.path("d", "orphan"), b"data", sync=True)
        self.assertEqual(sorted(os.listdir(fs.path("d"))), ["named", "orphan"])
        fs = self.after_cut(fs)
        self.assertEqual(os.listdir(fs.path("d")), ["named"], "the fsynced orphan is gone")
        self.assertEqual(read_file(fs.path("d", "named")), b"data")

    def test_2b_new_directory_needs_its_parent_synced(self):
        fs = self.mount()
        os.mkdir(fs.path("synced"))
        fsync_dir(fs.mnt)
        durable_file(fs.path("synced", "f"), b"data")
        os.mkdir(fs.path("unsynced"))
        durable_file(fs.path("unsynced", "f"), b"data")
        fs = self.after_cut(fs)
        self.assertEqual(os.listdir(fs.mnt), ["synced"])
        self.assertEqual(read_file(fs.path("synced", "f")), b"data")

    def test_2c_name_synced_before_data_is_empty(self):
        fs = self.mount()
        write_file(fs.path("f"), b"unsynced data")
        fsync_dir(fs.mnt)
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("f")), b"")

    def test_2d_hard_link_needs_its_directory_synced(self):
        fs = self.mount()
        durable_file(fs.path("a"), b"one")
        os.link(fs.path("a"), fs.path("b"))
        fs = self.after_cut(fs)
        self.assertEqual(os.listdir(fs.mnt), ["a"])
        os.link(fs.path("a"), fs.path("b"))
        fsync_dir(fs.mnt)
        write_file(fs.path("b"), b" two", mode="ab", sync=True)
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("a")), b"one two", "one inode under two names")
        self.assertEqual(os.stat(fs.path("b")).st_nlink, 2)

    def test_3_rename_undone_unless_synced(self):
        fs = self.mount()
        durable_file(fs.path("a"), b"old")
        durable_file(fs.path("c"), b"third")
        os.rename(fs.path("a"), fs.path("b"))
        self.assertFalse(os.path.exists(fs.path("a")))
        self.assertEqual(read_file(fs.path("b")), b"old")
        fs = self.after_cut(fs)
        self.assertEqual(sorted(os.listdir(fs.mnt)), ["a", "c"])
        self.assertEqual(read_file(fs.path("a")), b"old")
        os.rename(fs.path("a"), fs.path("b"))
        fsync_dir(fs.mnt)
        fs = self.after_cut(fs)
        self.assertEqual(sorted(os.listdir(fs.mnt)), ["b", "c"])
        self.assertEqual(read_file(fs.path("b")), b"old")

    def test_3b_rename_over_a_file_keeps_the_old_target_until_synced(self):
        fs = self.mount()
        durable_file(fs.path("target"), b"old")
        write_file(fs.path("target.tmp"), b"new", sync=True)
        os.rename(fs.path("target.tmp"), fs.path("target"))
        fs = self.after_cut(fs)
        self.assertEqual(os.listdir(fs.mnt), ["target"])
        self.assertEqual(read_file(fs.path("target")), b"old")
        write_file(fs.path("target.tmp"), b"new", sync=True)
        os.rename(fs.path("target.tmp"), fs.path("target"))
        fsync_dir(fs.mnt)
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("target")), b"new")

    def test_3c_move_between_directories_is_durable_as_a_whole(self):
        fs = self.mount()
        for d in ("from", "to"):
            os.mkdir(fs.path(d))
        fsync_dir(fs.mnt)
        durable_file(fs.path("from", "f"), b"moved")
        os.rename(fs.path("from", "f"), fs.path("to", "f"))
        fsync_dir(fs.path("to"))
        fs = self.after_cut(fs)
        self.assertEqual(os.listdir(fs.path("from")), [], "not left behind")
        self.assertEqual(read_file(fs.path("to", "f")), b"moved")

    def test_4_unlink_undone_unless_synced(self):
        fs = self.mount()
        durable_file(fs.path("back"), b"durable")
        durable_file(fs.path("gone"), b"durable")
        write_file(fs.path("back"), b" and more", mode="ab")
        os.unlink(fs.path("back"))
        os.unlink(fs.path("gone"))
        fsync_dir(fs.mnt)
        self.assertEqual(os.listdir(fs.mnt), [])
        fs = self.after_cut(fs)
        self.assertEqual(os.listdir(fs.mnt), [])
        durable_file(fs.path("back"), b"durable")
        write_file(fs.path("back"), b" and more", mode="ab")
        os.unlink(fs.path("back"))
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("back")), b"durable", "back with its durable content")

    def test_4b_unlinked_open_file_synced_through_its_descriptor(self):
        fs = self.mount()
        durable_file(fs.path("f"), b"one")
        with open(fs.path("f"), "r+b") as f:
            os.unlink(fs.path("f"))
            f.seek(0, os.SEEK_END)
            f.write(b" two")
            f.flush()
            os.ftruncate(f.fileno(), 7)
            os.fsync(f.fileno())
            f.seek(0)
            self.assertEqual(f.read(), b"one two")
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("f")), b"one two", "the unlink was never synced")

    def test_5_truncate_undone_unless_synced(self):
        fs = self.mount()
        durable_file(fs.path("lost"), b"0123456789")
        durable_file(fs.path("kept"), b"0123456789")
        os.truncate(fs.path("lost"), 3)
        with open(fs.path("kept"), "r+b") as f:
            f.truncate(3)
            os.fsync(f.fileno())
        self.assertEqual(read_file(fs.path("lost")), b"012")
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("lost")), b"0123456789")
        self.assertEqual(read_file(fs.path("kept")), b"012")

    def test_5b_truncate_then_grow_reads_zeros(self):
        fs = self.mount()
        durable_file(fs.path("f"), b"A" * 100)
        with open(fs.path("f"), "r+b") as f:
            f.truncate(10)
            f.seek(50)
            f.write(b"B" * 10)
            f.flush()
            os.fsync(f.fileno())
        expected = b"A" * 10 + bytes(40) + b"B" * 10
        self.assertEqual(read_file(fs.path("f")), expected)
        fs = self.after_cut(fs)
        self.assertEqual(read_file(fs.path("f")), expected)

    def test_6_sqlite_wal_keeps_every_full_commit(self):
        fs = self.mount()
        db = fs.path("catalog.db")
        before = fs.stats()
        writer = subprocess.Popen(
            [sys.executable, "-c", SQLITE_WRITER, db, str(SQLITE_COMMITS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.addCleanup(writer.stdout.close)
        self.addCleanup(writer.stdin.close)
        self.addCleanup(writer.wait)
        self.addCleanup(writer.kill)
        committed = []
        for line in writer.stdout:
            if line == "done\n":
                break
            committed.append(line.strip())
        self.assertEqual(committed, [str(i) for i in range(SQLITE_COMMITS)], "the writer died")
        reader = sqlite3.connect(db)
        self.assertEqual(reader.execute("pragma journal_mode").fetchone()[0], "wal")
        self.assertEqual(reader.execute("select count(*) from t").fetchone()[0], SQLITE_COMMITS)
        reader.close()
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        after = fs.stats()
        # The test never fsyncs the directory: the names of the database and of its WAL are
        # durable only because SQLite fsyncs the directory of a journal or WAL it creates.
        wal = os.path.join(self.backing, "catalog.db-wal")
        self.assertTrue(os.path.exists(wal), "the WAL's name was made durable")
        self.assertGreater(os.path.getsize(wal), 0, "the commits are in the WAL")
        print(
            f"\n  SQLite {sqlite3.sqlite_version}, WAL, synchronous=FULL, "
            f"{SQLITE_COMMITS} commits: "
            f"{after['fsync'] - before['fsync']} fsyncs, "
            f"{after['fsyncdir'] - before['fsyncdir']} directory fsyncs",
            file=sys.stderr,
        )
        fs = self.after_cut(fs)
        db = sqlite3.connect(fs.path("catalog.db"))
        self.addCleanup(db.close)
        self.assertEqual(db.execute("pragma integrity_check").fetchone()[0], "ok")
        rows = db.execute("select i, length(v) from t order by i").fetchall()
        self.assertEqual(rows, [(i, 1000) for i in range(SQLITE_COMMITS)])

    def test_7_stall_blocks_writes_not_reads(self):
        fs = self.mount()
        durable_file(fs.path("written"), b"before")
        durable_file(fs.path("read"), b"readable")
        seconds = 1.0
        with open(fs.path("written"), "r+b", buffering=0) as f:
            fs.request(f"stall {seconds}")
            write = BlockedCall(lambda: os.pwrite(f.fileno(), b"after!", 0))
            self.await_stalled(fs, 1)
            started = time.monotonic()
            self.assertEqual(read_file(fs.path("read")), b"readable")
            self.assertEqual(sorted(os.listdir(fs.mnt)), ["read", "written"])
            os.stat(fs.path("read"))
            # A chown that changes nothing (SQLite's at every open, as root) does not wait.
            os.chown(fs.path("read"), os.getuid(), os.getgid())
            self.assertLess(time.monotonic() - started, seconds / 2, "reads answer during a stall")
            self.assertEqual(write.result(), 6)
            self.assertGreaterEqual(write.elapsed, seconds * 0.9)
            self.assertLess(write.elapsed, seconds * 5)

            fs.request("stall 60")
            sync = BlockedCall(lambda: os.fsync(f.fileno()))
            self.await_stalled(fs, 1)
            fs.request("unstall")
            sync.result()
            self.assertLess(sync.elapsed, 10, "unstall releases the waiting fsync")

            fs.request("stall 60")
            lost = BlockedCall(lambda: os.pwrite(f.fileno(), b"never", 0))
            self.await_stalled(fs, 1)
            fs.cut()
            with self.assertRaises(OSError):
                lost.result()
        self.assertEqual(read_file(os.path.join(self.backing, "written")), b"after!")

    def test_7b_trap_cuts_between_two_steps(self):
        """A trap set on a file's fsync after its write holds that fsync (and every change after
        it, reads going on) until the cut: the write is lost, as the step it stopped was."""
        fs = self.mount()
        durable_file(fs.path("seg.mkv"), b"header")
        durable_file(fs.path("other"), b"x")
        for bad in ["trap fsync", "trap sync .mkv", "trap fsync .mkv before write .mkv"]:
            with self.assertRaises(RuntimeError, msg=bad):
                fs.request(bad)
        fs.request("trap fsync .mkv after write .mkv")
        with open(fs.path("seg.mkv"), "r+b", buffering=0) as f:
            # An fsync before any write is not the step the trap waits for.
            os.fsync(f.fileno())
            self.assertIsNone(fs.stats()["trapped"])
            os.pwrite(f.fileno(), b"cluster", 6)
            sync = BlockedCall(lambda: os.fsync(f.fileno()))
            self.await_stalled(fs, 1)
            self.assertEqual(fs.stats()["trapped"], "fsync /seg.mkv")
            self.assertEqual(read_file(fs.path("seg.mkv")), b"headercluster")
            later = BlockedCall(lambda: write_file(fs.path("other"), b"y"))
            self.await_stalled(fs, 2)
            fs.cut()
            with self.assertRaises(OSError):
                sync.result()
            with self.assertRaises(OSError):
                later.result()
        fs = self.mount()
        self.assertEqual(read_file(fs.path("seg.mkv")), b"header")
        self.assertEqual(read_file(fs.path("other")), b"x")

    def test_7c_sqlite_is_read_during_a_stall(self):
        """A stalled disk holds SQLite's writer, not a reader that has its connection open: no
        page of the database or the WAL is cached (so none is locked by the held write), and
        the WAL index (-shm), which both map, is written back whatever the stall."""
        fs = self.mount()
        db = fs.path("catalog.db")
        writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        writer.execute("pragma journal_mode=wal")
        writer.execute("pragma synchronous=full")
        writer.execute("create table t(i integer)")
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)

        def count():
            return reader.execute("select count(*) from t").fetchone()[0]

        self.assertEqual(count(), 0)
        for i in range(20):
            writer.execute("insert into t values (?)", (i,))
        fs.request("stall 60")
        insert = BlockedCall(lambda: writer.execute("insert into t values (20)"))
        self.await_stalled(fs, 1)
        read = BlockedCall(count)
        self.assertEqual(read.result(), 20)
        self.assertLess(read.elapsed, 10, "the reader waited for the stall")
        fs.request("unstall")
        insert.result()
        self.assertEqual(count(), 21)
        reader.close()
        writer.close()

    def test_8_random_operations_match_a_real_directory(self):
        """Seeded random writes, truncations, renames, removals and syncs, done both on the
        mount and on a real directory: the mount shows what the real one does, and once
        everything is synced a cut (or a clean unmount) leaves the disk equal to it."""
        reference = os.path.join(self.workdir, "reference")
        os.mkdir(reference)
        rng = random.Random(8)
        fs = self.mount()
        for d in ("d0", "d1"):
            os.mkdir(fs.path(d))
            os.mkdir(os.path.join(reference, d))
        for ending in ("sync everything, then cut", "clean unmount"):
            for _ in range(400):
                random_operation(rng, fs.mnt, reference)
            self.assertEqual(tree(fs.mnt), tree(reference), ending)
            if ending == "clean unmount":
                fs.request("unmount")
                fs.proc.wait(DEADLINE)
            else:
                for parent, _dirs, files in os.walk(fs.mnt):
                    for name in files:
                        with open(os.path.join(parent, name), "rb") as f:
                            os.fsync(f.fileno())
                    fsync_dir(parent)
                fs = self.after_cut(fs)
            self.assertEqual(tree(self.backing), tree(reference), ending)

    def await_stalled(self, fs, n):
        """Waits until ``n`` operations are held by the stall (no event reaches the test)."""
        deadline = time.monotonic() + DEADLINE
        while fs.stats()["stalled"] != n:
            self.assertLess(time.monotonic(), deadline, f"{n} operations never stalled")
            time.sleep(0.01)


class BlockedCall:
    """A call run on a thread of its own, so that the test can act while it blocks."""

    def __init__(self, call):
        self._call = call
        self._outcome = None
        self.elapsed = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        started = time.monotonic()
        try:
            self._outcome = (True, self._call())
        except OSError as e:
            self._outcome = (False, e)
        self.elapsed = time.monotonic() - started

    def result(self):
        self._thread.join(DEADLINE)
        if self._thread.is_alive():
            raise AssertionError(f"still blocked after {DEADLINE}s")
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def tree(root):
    """Every directory and file under ``root``, with the files' contents."""
    found = {}
    for parent, dirs, files in os.walk(root):
        rel = os.path.relpath(parent, root)
        for name in dirs:
            found[os.path.join(rel, name)] = "dir"
        for name in files:
            found[os.path.join(rel, name)] = read_file(os.path.join(parent, name))
    return found


def random_operation(rng, *roots):
    """One random change, made alike under each of ``roots`` (the mount and a real directory)."""
    names = [os.path.join(d, f"f{i}") for d in ("", "d0", "d1") for i in range(4)]
    name = rng.choice(names)
    existing = os.path.exists(os.path.join(roots[-1], name))
    kind = rng.choice(
        ["write", "write", "write", "truncate", "fsync", "rename", "unlink", "fsyncdir"]
    )
    if kind == "write" or not existing and kind != "fsyncdir":
        size = os.path.getsize(os.path.join(roots[-1], name)) if existing else 0
        offset, data = rng.randrange(size + 5000), rng.randbytes(rng.randrange(1, 9000))
        for root in roots:
            fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT, 0o600)
            os.pwrite(fd, data, offset)
            os.close(fd)
    elif kind == "truncate":
        size = rng.randrange(20000)
        for root in roots:
            os.truncate(os.path.join(root, name), size)
    elif kind == "fsync":
        for root in roots:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
    elif kind == "rename":
        target = rng.choice(names)
        for root in roots:
            os.rename(os.path.join(root, name), os.path.join(root, target))
    elif kind == "unlink":
        for root in roots:
            os.unlink(os.path.join(root, name))
    else:
        for root in roots:
            fsync_dir(os.path.join(root, os.path.dirname(name)))


SQLITE_COMMITS = 50

# The writer runs in a process of its own, killed with -9 before the cut, as the agent would be:
# its connection stays open, so SQLite never checkpoints and the commits live in the WAL only.
SQLITE_WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("pragma synchronous=full")
db.execute("create table t(i integer primary key, v blob)")
for i in range(int(sys.argv[2])):
    db.execute("begin immediate")
    db.execute("insert into t values (?, randomblob(1000))", (i,))
    db.execute("commit")
    print(i, flush=True)
print("done", flush=True)
sys.stdin.read()
"""


if __name__ == "__main__":
    unittest.main(verbosity=2)
