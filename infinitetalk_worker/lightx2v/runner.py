"""Runs the stored tasks one at a time, in the order they came, and cancels them for real.

`TaskRunner` owns one thread. It takes the oldest pending task from the store, hands it to a
`RunTask` callable (in production: the shared pipeline against the local ComfyUI, see
`pipeline_task`), and records how it ended. Cancelling a running task sets the event that the
pipeline passes to ComfyUI, which interrupts the run; the task then ends `cancelled`, not
`completed` with a result nobody wanted. The same thread deletes finished tasks and their results
once they are older than the configured lifetime.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..errors import InputError, JobCancelled, WorkerError
from ..settings import Settings
from .store import CANCELLED, COMPLETED, FAILED, PENDING, PROCESSING, Task, TaskStore

log = logging.getLogger("infinitetalk")

# How long DELETE waits for a running task to stop before answering (ComfyUI's interrupt lands
# within a sampler step; this only bounds the HTTP call, the task is cancelled either way).
CANCEL_WAIT_S = 30.0
# Progress is written to the store at most this often; status polls read it from there.
PROGRESS_EVERY_S = 1.0
CANCELLED_BY_USER = "Task cancelled by user"


class RunTask(Protocol):
    def __call__(
        self, task: Task, result_path: Path, cancel: threading.Event, on_progress: Callable[[dict], None]
    ) -> dict:
        """Make the task's video at `result_path`; return its metadata. Raises WorkerError."""


@dataclass(frozen=True)
class StopResult:
    stop_status: str  # "success" | "do_nothing" | "error"
    reason: str


class TaskRunner:
    def __init__(self, store: TaskStore, run_task: RunTask, cache_dir: Path, result_ttl_s: float):
        self.store = store
        self.run_task = run_task
        self.outputs = cache_dir / "outputs"
        self.inputs = cache_dir / "inputs"
        self.result_ttl_s = result_ttl_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[str, threading.Event] | None = None
        self._user_cancels: set[str] = set()
        self._ended = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._next_sweep = 0.0

    @property
    def current_task(self) -> str | None:
        with self._lock:
            return self._current[0] if self._current else None

    def start(self) -> None:
        for task_id in self.store.recover():
            log.warning("task=%s was running when the service stopped; marked failed", task_id)
            self._remove_inputs(task_id)
        self._thread = threading.Thread(target=self._loop, name="lightx2v-tasks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking tasks; a running one is interrupted and put back in the queue."""
        self._stopping.set()
        with self._lock:
            if self._current:
                self._current[1].set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=CANCEL_WAIT_S)

    def notify(self) -> None:
        """A task was added."""
        self._wake.set()

    def cancel(self, task_id: str) -> StopResult:
        task = self.store.get(task_id)
        if task is None or task.status not in (PENDING, PROCESSING):
            return StopResult("do_nothing", "Task not found or already completed.")
        if task.status == PENDING and self.store.finish(
            task_id, CANCELLED, error=CANCELLED_BY_USER, error_type="Cancelled"
        ):
            self._remove_inputs(task_id)
            log.info("task=%s cancelled before it started", task_id)
            return StopResult("success", "Task stopped successfully.")
        with self._lock:
            if not self._current or self._current[0] != task_id:
                # It ended (or started and ended) between the two looks: nothing left to stop.
                return StopResult("do_nothing", "Task not found or already completed.")
            self._user_cancels.add(task_id)
            self._current[1].set()
            log.info("task=%s cancel requested: interrupting ComfyUI", task_id)
            stopped = self._ended.wait_for(
                lambda: not self._current or self._current[0] != task_id, timeout=CANCEL_WAIT_S
            )
        if not stopped:
            # The run keeps being interrupted in the background; the task is cancelled now.
            self.store.finish(task_id, CANCELLED, error=CANCELLED_BY_USER, error_type="Cancelled")
        return StopResult("success", "Task stopped successfully.")

    def sweep(self) -> None:
        """Delete finished tasks (and their results) that ended more than the lifetime ago."""
        if self.result_ttl_s <= 0:
            return
        for task in self.store.ended_before(time.time() - self.result_ttl_s):
            (self.outputs / task.save_result_path).unlink(missing_ok=True)
            self._remove_inputs(task.task_id)
            self.store.delete(task.task_id)
            log.info("task=%s expired: task and result deleted", task.task_id)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if time.monotonic() >= self._next_sweep:
                self._safe_sweep()
            task = self.store.next_pending()
            if task is None:
                self._wake.wait(timeout=self._sweep_interval())
                self._wake.clear()
                continue
            cancel = threading.Event()
            # Current before it is marked processing, so a cancel in between finds it.
            with self._lock:
                self._current = (task.task_id, cancel)
            if self.store.start(task.task_id):
                self._run(task, cancel)
            else:
                with self._lock:
                    self._current = None

    def _sweep_interval(self) -> float:
        if self.result_ttl_s <= 0:
            return 3600.0
        return min(max(self.result_ttl_s / 10, 1.0), 600.0)

    def _safe_sweep(self) -> None:
        self._next_sweep = time.monotonic() + self._sweep_interval()
        try:
            self.sweep()
        except Exception:  # expiry must never stop the queue
            log.exception("expiring old tasks failed")

    def _run(self, task: Task, cancel: threading.Event) -> None:
        result_path = self.outputs / task.save_result_path
        started = time.monotonic()
        log.info("task=%s processing", task.task_id)
        try:
            if cancel.is_set():
                raise JobCancelled("the task was cancelled before it started")
            metadata = self.run_task(task, result_path, cancel, self._progress_writer(task.task_id))
        except WorkerError as e:
            result_path.unlink(missing_ok=True)
            if cancel.is_set() or isinstance(e, JobCancelled):
                self._end(task.task_id, CANCELLED, error=CANCELLED_BY_USER, error_type="Cancelled")
            else:
                self._end(task.task_id, FAILED, error=e.message, error_type=type(e).__name__)
        except Exception:
            result_path.unlink(missing_ok=True)
            log.exception("task=%s failed with an unexpected error", task.task_id)
            self._end(
                task.task_id,
                FAILED,
                error=f"internal error in the task service (task {task.task_id}); its log has the details",
                error_type="InternalError",
            )
        else:
            if cancel.is_set():
                result_path.unlink(missing_ok=True)
                self._end(task.task_id, CANCELLED, error=CANCELLED_BY_USER, error_type="Cancelled")
            elif metadata.get("partial"):
                # A long video stopped early (deadline, ComfyUI failure): the windows made are
                # the result, and the status says what is missing.
                self._end(task.task_id, COMPLETED, metadata=metadata, error=metadata["partial"],
                          error_type="PartialResult")
            else:
                self._end(task.task_id, COMPLETED, metadata=metadata)
        finally:
            ended = self.store.get(task.task_id)
            if ended is None or ended.status != PENDING:
                self._remove_inputs(task.task_id)
            with self._lock:
                self._current = None
                self._user_cancels.discard(task.task_id)
                self._ended.notify_all()
            log.info(
                "task=%s %s after %.1fs", task.task_id, ended.status if ended else "deleted", time.monotonic() - started
            )

    def _end(self, task_id: str, status: str, **fields) -> None:
        if status == CANCELLED and self._stopping.is_set() and task_id not in self._user_cancels:
            # Interrupted by the service shutting down, not by its owner: run it again after
            # the restart.
            self.store.requeue(task_id)
            log.info("task=%s interrupted by shutdown; it runs again after the restart", task_id)
            return
        self.store.finish(task_id, status, **fields)

    def _progress_writer(self, task_id: str) -> Callable[[dict], None]:
        last = [0.0]

        def write(update: dict) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self.store.set_progress(task_id, update)

        return write

    def _remove_inputs(self, task_id: str) -> None:
        shutil.rmtree(self.inputs / task_id, ignore_errors=True)


def pipeline_task(settings: Settings) -> RunTask:
    """The production RunTask: the shared pipeline against the ComfyUI in `settings`."""
    from ..pipeline import JobContext, Pipeline
    from ..request import parse_request
    from .translate import renamed

    pipeline = Pipeline(settings)

    def run(task: Task, result_path: Path, cancel: threading.Event, on_progress: Callable[[dict], None]) -> dict:
        ctx = JobContext(job_id=task.task_id, cancel=cancel, on_progress=on_progress)
        try:
            request = parse_request(task.job_input or {}, settings)
            with pipeline.generate(request, ctx) as generated:
                if cancel.is_set():
                    raise JobCancelled("the task was cancelled")
                result_path.parent.mkdir(parents=True, exist_ok=True)
                # Move under a temporary name first, so a download never sees half a file.
                partial = result_path.with_name(f".{result_path.name}.part")
                shutil.move(str(generated.video), partial)
                os.replace(partial, result_path)
                return {**generated.metadata, "warnings": generated.warnings, "partial": generated.partial}
        except InputError as e:
            raise renamed(e, task.field_names or {}) from None

    return run
