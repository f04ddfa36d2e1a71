"""The default store: one SQLite file owned by one process.

Two tables: ``kv`` is the current state, ``log`` has one row per change
(``rev INTEGER PRIMARY KEY, key, type, value``; a delete's row keeps the
last value). Lists at an old revision and watches from an old revision are
answered from ``log``, so they work across restarts, and a reopened file
continues from its last revision.

WAL journal with ``synchronous=NORMAL``: a commit is in the WAL file (the
OS page cache) before the call returns, so an acknowledged write survives
``kill -9`` of the process; only a power cut may lose the last commits.
Statements are short and run on the trio thread; checkpoints (which fsync)
run in a thread of their own.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from kmesh.store.base import AlreadyExists, EventType, Unavailable
from kmesh.store.broadcast import DEFAULT_WINDOW
from kmesh.store.local import Change, LocalStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
-- kv follows log: one INSERT into log is the whole (atomic) write.
CREATE TRIGGER IF NOT EXISTS log_apply AFTER INSERT ON log BEGIN
    SELECT RAISE(ABORT, 'kmesh: key exists')
        WHERE NEW.type = 'ADDED' AND EXISTS (SELECT 1 FROM kv WHERE key = NEW.key);
    INSERT OR REPLACE INTO kv (key, value, rev)
        SELECT NEW.key, NEW.value, NEW.rev WHERE NEW.type != 'DELETED';
    DELETE FROM kv WHERE NEW.type = 'DELETED' AND key = NEW.key;
END;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

# The newest log row per key at or before a revision; bare columns come from
# the MAX(rev) row (an SQLite guarantee).
_AT = """
SELECT key, value, rev FROM (
    SELECT key, type, value, MAX(rev) AS rev FROM log
    WHERE key >= ? AND key < ? AND rev <= ? GROUP BY key
) WHERE type != 'DELETED'
"""

# Revisions one compaction step covers.
_COMPACT_STEP = 5000
# Commits between two checkpoints, and the size the WAL is cut back to.
_CHECKPOINT_EVERY = 500
_WAL_SIZE_LIMIT = 64 << 20


class SqliteEngine:
    """The SQLite implementation of :class:`kmesh.store.local.Engine`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd = _lock(self.path)
        try:
            _private(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
            self.compacted: int = row[0] if row else 0
            (last,) = self._db.execute("SELECT COALESCE(MAX(rev), 0) FROM log").fetchone()
            # Compaction may have removed the newest row (a delete), never its revision.
            self.revision: int = max(last, self.compacted)
            self._checkpointer = _Checkpointer(self.path)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def get(self, key: str) -> tuple[str, int] | None:
        row: tuple[str, int] | None = self._db.execute("SELECT value, rev FROM kv WHERE key = ?", (key,)).fetchone()
        return row

    def write(self, key: str, type: EventType, value: str) -> int:
        rev = self.revision + 1
        try:
            self._db.execute("INSERT INTO log (rev, key, type, value) VALUES (?, ?, ?, ?)", (rev, key, type, value))
        except sqlite3.IntegrityError as e:
            if "kmesh: key exists" in str(e):
                raise AlreadyExists(f"{key} already exists", key) from None
            raise
        self.revision = rev
        if self._checkpointer.wrote():
            # The thread has copied the bulk; copying the few frames written
            # since lets the next commit restart the WAL from its beginning.
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return rev

    def range(self, start: str, end: str, at: int | None, limit: int | None) -> list[tuple[str, str, int]]:
        if at is None:
            sql = "SELECT key, value, rev FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?"
            args: tuple[object, ...] = (start, end, -1 if limit is None else limit)
        else:
            sql = _AT + " ORDER BY key LIMIT ?"
            args = (start, end, at, -1 if limit is None else limit)
        return self._db.execute(sql, args).fetchall()

    def count(self, start: str, end: str, at: int | None) -> int:
        if at is None:
            row = self._db.execute("SELECT COUNT(*) FROM kv WHERE key >= ? AND key < ?", (start, end))
        else:
            row = self._db.execute(f"SELECT COUNT(*) FROM ({_AT})", (start, end, at))
        return int(row.fetchone()[0])

    def changes(self, after: int, upto: int, start: str, end: str) -> list[Change]:
        return self._db.execute(
            "SELECT rev, key, type, value FROM log NOT INDEXED"
            " WHERE rev > ? AND rev <= ? AND key >= ? AND key < ? ORDER BY rev",
            (after, upto, start, end),
        ).fetchall()

    def compact(self, revision: int) -> Iterator[None]:
        db = self._db
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('compacted', ?)", (revision,))
        self.compacted = revision
        # Ascending steps: a version is dropped no later than the delete that
        # superseded it, so a list at any revision >= `revision` stays right
        # between steps (writes go on meanwhile).
        (low,) = db.execute("SELECT COALESCE(MIN(rev), 0) FROM log").fetchone()
        lo = max(low - 1, 0)
        while lo < revision:
            hi = min(lo + _COMPACT_STEP, revision)
            db.execute(
                "DELETE FROM log WHERE rev > :lo AND rev <= :hi AND (type = 'DELETED' OR EXISTS ("
                " SELECT 1 FROM log AS n WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= :c))",
                {"lo": lo, "hi": hi, "c": revision},
            )
            lo = hi
            yield

    def close(self) -> None:
        try:
            self._checkpointer.close()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
        finally:
            os.close(self._lock_fd)


class _Checkpointer:
    """Copies the WAL back into the database file from a thread of its own.

    A checkpoint of a few MB fsyncs the database file and can take tens of
    milliseconds; done by SQLite's automatic checkpoint it would stall the
    trio loop. PASSIVE checkpoints on a second connection never block the
    writer, but under a steady stream of commits they never finish the WAL
    either, so it would grow without end: after each one the writer is
    told (``wrote()`` returns True) to copy the short tail itself.
    """

    def __init__(self, path: Path, every: int = _CHECKPOINT_EVERY) -> None:
        self._path = path
        self._every = every
        self._writes = 0
        self._wake = threading.Event()
        self._copied = False  # set by the thread, read and cleared by the writer
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"sqlite-checkpoint {path.name}", daemon=True)
        self._thread.start()

    def wrote(self) -> bool:
        """Count one commit; True when the writer should checkpoint the tail."""
        self._writes += 1
        if self._writes >= self._every:
            self._writes = 0
            self._wake.set()
        if self._copied:
            self._copied = False
            return True
        return False

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._copied = True
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread (waits for a checkpoint in progress)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()


def _private(path: Path) -> None:
    """Create the database 0600 (SQLite would make it 0644, and gives its -wal/-shm the db's mode);
    an older one of ours that others could read loses those bits."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, st.st_mode & 0o700)
    finally:
        os.close(fd)


def _lock(path: Path) -> int:
    """Hold an exclusive lock on ``<path>-lock`` for as long as the store is open."""
    fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Unavailable(f"{path} is in use by another process") from None
    return fd


class SqliteStore(LocalStore):
    """A Store in one SQLite file (created if missing) that this process owns."""

    def __init__(self, path: str | os.PathLike[str], *, window: int = DEFAULT_WINDOW) -> None:
        super().__init__(SqliteEngine(path), window=window)
