"""The task service's memory: one SQLite file, so tasks and their results survive a restart.

The reference LightX2V server keeps tasks in a dict and forgets them (and every result) when it
stops. Here each task is a row: its status, the §1 job input it runs (cleared once it ends), the
result file's path below outputs/, timings, error and progress. A single connection behind a lock
is plenty for one task running at a time and a few status polls a second.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE = (PENDING, PROCESSING)
FINISHED = (COMPLETED, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: tasks run first come, first served
    task_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    job_input TEXT,                         -- §1 job input as JSON; NULL once the task has ended
    field_names TEXT NOT NULL DEFAULT '{}', -- §1 field -> the LightX2V field it came from (JSON)
    save_result_path TEXT NOT NULL UNIQUE,  -- result file, relative to outputs/
    created_at REAL NOT NULL,
    start_time REAL NOT NULL,               -- creation, then the start of processing (as LightX2V)
    end_time REAL,
    error TEXT,
    error_type TEXT,
    progress TEXT,                          -- last progress update (JSON)
    metadata TEXT                           -- seed, frames, fps... of the result (JSON)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, seq);
"""


class QueueFull(Exception):
    """As many tasks are waiting or running as the queue allows."""


class DuplicateTask(Exception):
    """The task id or the result path is already taken."""


@dataclass(frozen=True)
class Task:
    task_id: str
    status: str
    save_result_path: str
    created_at: float
    start_time: float
    end_time: float | None
    error: str | None
    error_type: str | None
    progress: dict | None
    metadata: dict | None
    job_input: dict | None = None
    field_names: dict | None = None


_COLUMNS = (
    "task_id, status, save_result_path, created_at, start_time, end_time, error, error_type, "
    "progress, metadata"
)


def _task(row: tuple, job_input: str | None = None, field_names: str | None = None) -> Task:
    (task_id, status, save, created, start, end, error, error_type, progress, metadata) = row
    return Task(
        task_id=task_id,
        status=status,
        save_result_path=save,
        created_at=created,
        start_time=start,
        end_time=end,
        error=error,
        error_type=error_type,
        progress=json.loads(progress) if progress else None,
        metadata=json.loads(metadata) if metadata else None,
        job_input=json.loads(job_input) if job_input else None,
        field_names=json.loads(field_names) if field_names else None,
    )


class TaskStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self, task_id: str, job_input: dict, field_names: dict, save_result_path: str, max_active: int
    ) -> str | None:
        """Add a pending task. Returns the id of a finished task whose result path it takes over
        (that task is forgotten, as LightX2V overwrites the file); a waiting or running holder
        of the path, or the same task id, is a DuplicateTask."""
        now = time.time()
        replaced = None
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                active = self._db.execute(
                    "SELECT COUNT(*) FROM tasks WHERE status IN (?, ?)", ACTIVE
                ).fetchone()[0]
                if active >= max_active:
                    raise QueueFull(f"Task queue is full (max {max_active} tasks)")
                if self._db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone():
                    raise DuplicateTask(f"task_id: {task_id} already exists")
                holder = self._db.execute(
                    "SELECT task_id, status FROM tasks WHERE save_result_path = ?", (save_result_path,)
                ).fetchone()
                if holder and holder[1] in ACTIVE:
                    raise DuplicateTask(
                        f"save_result_path: {save_result_path} is the result of task {holder[0]}, "
                        "which has not finished; choose another path"
                    )
                if holder:
                    replaced = holder[0]
                    self._db.execute("DELETE FROM tasks WHERE task_id = ?", (replaced,))
                self._db.execute(
                    "INSERT INTO tasks (task_id, status, job_input, field_names, save_result_path, created_at,"
                    " start_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (task_id, PENDING, json.dumps(job_input), json.dumps(field_names), save_result_path, now, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return replaced

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task(row) if row else None

    def next_pending(self) -> Task | None:
        """The oldest waiting task, with its job input."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS}, job_input, field_names FROM tasks WHERE status = ? ORDER BY seq LIMIT 1",
                (PENDING,),
            ).fetchone()
        return _task(row[:-2], row[-2], row[-1]) if row else None

    def start(self, task_id: str) -> bool:
        """pending -> processing; False when the task was cancelled in the meantime."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE tasks SET status = ?, start_time = ? WHERE task_id = ? AND status = ?",
                (PROCESSING, time.time(), task_id, PENDING),
            )
        return cur.rowcount == 1

    def finish(
        self,
        task_id: str,
        status: str,
        *,
        error: str | None = None,
        error_type: str | None = None,
        metadata: dict | None = None,
    ) -> bool:
        """An active task ends; a task already ended (cancelled by the caller) keeps its status."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE tasks SET status = ?, end_time = ?, error = ?, error_type = ?, metadata = ?,"
                " job_input = NULL WHERE task_id = ? AND status IN (?, ?)",
                (status, time.time(), error, error_type, json.dumps(metadata) if metadata else None,
                 task_id, *ACTIVE),
            )
        return cur.rowcount == 1

    def requeue(self, task_id: str) -> None:
        """processing -> pending, keeping its place in the queue (the service is shutting down)."""
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET status = ?, start_time = created_at, progress = NULL"
                " WHERE task_id = ? AND status = ?",
                (PENDING, task_id, PROCESSING),
            )

    def set_progress(self, task_id: str, progress: dict) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET progress = ? WHERE task_id = ? AND status = ?",
                (json.dumps(progress), task_id, PROCESSING),
            )

    def recover(self) -> list[str]:
        """After a restart: tasks that were running when the service stopped have failed."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT task_id FROM tasks WHERE status = ?", (PROCESSING,))]
        for task_id in ids:
            self.finish(
                task_id,
                FAILED,
                error="the task service stopped while this task was running; submit it again",
                error_type="Interrupted",
            )
        return ids

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
        counts = {status: 0 for status in (*ACTIVE, *FINISHED)}
        counts.update(dict(rows))
        return counts

    def ids(self, active_only: bool = False) -> list[str]:
        """Task ids in submission order."""
        where = " WHERE status IN (?, ?)" if active_only else ""
        with self._lock:
            rows = self._db.execute(f"SELECT task_id FROM tasks{where} ORDER BY seq", ACTIVE if active_only else ())
            return [r[0] for r in rows]

    def processing_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT task_id FROM tasks WHERE status = ?", (PROCESSING,))]

    def ended_before(self, when: float) -> list[Task]:
        """Finished tasks that ended before `when` (epoch seconds): candidates for expiry."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE status IN (?, ?, ?) AND end_time < ? ORDER BY seq",
                (*FINISHED, when),
            ).fetchall()
        return [_task(r) for r in rows]

    def delete(self, task_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
