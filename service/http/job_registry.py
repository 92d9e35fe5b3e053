"""The service's job registry: one SQLite file beside the runs (`RUNS/registry.sqlite3`).

It holds what the run folders cannot: the queue (submission order), the idempotency keys,
who asked for what, and the states a run folder has no word for (`queued`, `cancelled`).
Progress (episodes, best reward) stays in each run folder's status.json, written by the
same lifecycle as the command line's. Every write is one transaction, so a kill at any
moment leaves the registry as it was before or after it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "finished", "failed", "interrupted", "cancelled")
# the moves a job's state may make, and no other: `set_state` refuses the rest
MOVES = {
    "queued": ("running", "cancelled"),
    "running": ("finished", "failed", "interrupted", "cancelled",
                "queued"),  # queued: its worker died and it resumes on its own
    "interrupted": ("queued",),  # resume
    "cancelled": ("queued",),  # resume
    "finished": (),
    "failed": (),
}
KINDS = ("search", "baseline", "bench")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    resume INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    ended REAL
);
"""


class IdempotencyConflict(Exception):
    """An Idempotency-Key sent again with another job than the one it made."""


@dataclass
class JobRecord:
    id: str
    seq: int
    kind: str
    config: dict
    state: str
    run_dir: str
    idempotency_key: str | None
    resume: bool
    pid: int | None
    error: str | None
    created: float
    started: float | None
    ended: float | None

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "run_dir": self.run_dir,
                "config": self.config, "error": self.error, "created": self.created,
                "started": self.started, "ended": self.ended}


def _same_job(made: JobRecord, kind: str, config: dict, key: str) -> JobRecord:
    """The job `key` made, if it is this one."""
    if (made.kind, made.config) != (kind, json.loads(json.dumps(config))):
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for another job ({made.id}, {made.kind} of "
            f"{made.config.get('model')}); send a new key for a different job")
    return made


class Registry:
    """Thread-safe access to the jobs table (one connection, one lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_record(row) for row in rows]

    def submit(self, kind: str, config: dict, runs: Path, key: str | None) -> tuple[JobRecord,
                                                                                   bool]:
        """A new queued job, or (with an idempotency key seen before) the one it made; the
        flag says whether it is new. IdempotencyConflict: the key made a different job."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = None if key is None else self._db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
                if row is None:
                    seq = self._db.execute(
                        "SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
                    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
                    run_dir = str(Path(runs) / job_id)
                    self._db.execute(
                        "INSERT INTO jobs (id, seq, kind, config, state, run_dir, "
                        "idempotency_key, created) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                        (job_id, seq, kind, json.dumps(config), run_dir, key, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is not None:
            assert key is not None  # found by its key
            return _same_job(_record(row), kind, config, key), False
        record = self.get(job_id)
        assert record is not None  # inserted above
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def all(self) -> list[JobRecord]:
        return self._rows("SELECT * FROM jobs ORDER BY seq")

    def in_state(self, *states: str) -> list[JobRecord]:
        marks = ",".join("?" * len(states))
        return self._rows(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq", states)

    def update(self, job_id: str, **fields: object) -> None:
        if not fields:
            return
        names = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))

    def set_state(self, job_id: str, state: str, *, expect: tuple[str, ...] | None = None,
                  **fields: object) -> bool:
        """Move a job to `state` if `MOVES` allows it from the state it is in (and that state
        is one of `expect`, if given), in one statement under the lock; False if not."""
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        sources = [s for s, moves in MOVES.items() if state in moves and (
            expect is None or s in expect)]
        if not sources:
            return False
        names = ", ".join(f"{k} = ?" for k in ("state", *fields))
        sql = (f"UPDATE jobs SET {names} WHERE id = ? AND state IN "
               f"({','.join('?' * len(sources))})")
        with self._lock:
            return self._db.execute(sql, (state, *fields.values(), job_id,
                                          *sources)).rowcount == 1


def _record(row: tuple) -> JobRecord:
    (job_id, seq, kind, config, state, run_dir, key, resume, pid, error, created, started,
     ended) = row
    return JobRecord(job_id, seq, kind, json.loads(config), state, run_dir, key, bool(resume),
                     pid, error, created, started, ended)
