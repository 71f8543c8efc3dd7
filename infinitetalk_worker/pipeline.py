"""One job, from its input to a delivered video: the stages wired together, and cleanup.

Every front door (the RunPod handler, the MultiTalk input shape, the LightX2V task service)
runs jobs through `Pipeline`, so validation, errors, progress and cleanup are the same for all.
Bad input fails in `parse_request` / `prepare_media`, before anything reaches ComfyUI; the
per-job folder and this job's ComfyUI files are removed on every path out of `generate`.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import delivery, longform
from .comfy import ComfyClient, Progress
from .errors import ComfyUnavailable, WorkerError
from .media import JobMedia, prepare_media, probe_video
from .request import Request, parse_request
from .settings import Settings
from .workflows import build_graph, files_to_stage

log = logging.getLogger("infinitetalk")


@dataclass
class JobContext:
    job_id: str
    on_progress: Callable[[dict], None] | None = None
    cancel: threading.Event | None = None
    s3_config: dict | None = None


@dataclass
class Generated:
    video: Path
    metadata: dict
    warnings: list[str]
    partial: str | None = None  # why the video stops early (its warning); None when complete


@dataclass
class _Timer:
    job_id: str
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.timings[name] = round(took, 3)
            log.info("job=%s stage=%s took=%.2fs%s", self.job_id, name, took, f" {detail}" if detail else "")


class Pipeline:
    def __init__(self, settings: Settings | None = None, client: ComfyClient | None = None):
        self.settings = settings or Settings.from_env()
        self.client = client or ComfyClient(self.settings)

    def run_job(self, job_input: Any, ctx: JobContext) -> dict:
        """The RunPod door: a §1 input dict in, a §2 result or a §3 error out."""
        timer = _Timer(ctx.job_id)
        try:
            with timer.stage("request"):
                request = parse_request(job_input, self.settings)
            with self.generate(request, ctx, timer) as generated:
                with timer.stage("deliver"):
                    result = delivery.deliver(generated, request, self.settings, ctx)
            if generated.partial:
                # The job did not finish, so RunPod must mark it FAILED; the frames it made are
                # delivered beside the error rather than thrown away.
                result["error"] = f"{generated.partial}; the partial video is in the job output"
            return result
        except ComfyUnavailable as e:
            log.error("job=%s failed: %s (asking RunPod for a fresh worker)", ctx.job_id, e.message)
            return {"error": e.message, "refresh_worker": True}
        except WorkerError as e:
            log.warning("job=%s failed: %s", ctx.job_id, e.message)
            return {"error": e.message}
        except Exception:
            log.exception("job=%s failed with an unexpected error", ctx.job_id)
            return {
                "error": f"internal error in the worker (job {ctx.job_id}); the worker log has "
                "the details — please report it"
            }

    @contextmanager
    def generate(self, request: Request, ctx: JobContext, timer: _Timer | None = None) -> Iterator[Generated]:
        """Media -> graph -> ComfyUI run -> MP4; the job's folder and ComfyUI files go on exit."""
        timer = timer or _Timer(ctx.job_id)
        settings = self.settings
        tag = f"rp-{delivery.safe_name(ctx.job_id, 40)}-{uuid.uuid4().hex[:8]}"
        job_dir = settings.work_dir.resolve() / tag
        job_dir.mkdir(parents=True, exist_ok=False)
        staged_any = False
        try:
            with timer.stage("media"):
                media = prepare_media(request, settings, job_dir)
            with timer.stage("comfy_ready"):
                self.client.ensure_ready()
            long_form = _wants_long_form(request, media, settings)
            with timer.stage("stage"):
                staged_any = True
                staged = self.client.stage(tag, files_to_stage(request, media))
            frames_dir = job_dir / "frames" if long_form else None
            graph = build_graph(request, media, staged, settings, prefix=f"{tag}/infinitetalk", frames_dir=frames_dir)
            report = _ProgressReporter(ctx, graph.windows)
            deadline = time.monotonic() + settings.job_timeout_s
            if long_form:
                with timer.stage("run", f"workflow={graph.name} windows={graph.windows} long_form=yes"):
                    video, partial, warnings = longform.run(
                        self.client, graph, media, out_dir=job_dir, on_progress=report,
                        on_comfy_progress=report.comfy, deadline=deadline, cancel=ctx.cancel, job_id=ctx.job_id,
                    )
            else:
                with timer.stage("run", f"workflow={graph.name} windows={graph.windows}"):
                    outcome = self.client.run(graph, on_progress=report.comfy, deadline=deadline, cancel=ctx.cancel)
                video, partial, warnings = _final_video(outcome.files, job_dir), False, []
            with timer.stage("probe"):
                info = probe_video(video)
            if info is None:
                raise WorkerError("ComfyUI finished but the video it wrote cannot be read")
            metadata = {
                "seed": request.seed,
                "workflow": request.workflow,
                "frames": info.frames,
                "fps": info.fps,
                "duration_s": info.duration_s,
                "width": info.width,
                "height": info.height,
                "timings": timer.timings,
            }
            yield Generated(video=video, metadata=metadata, warnings=media.warnings + warnings,
                            partial=warnings[-1] if partial else None)
        finally:
            if staged_any:
                self.client.cleanup(tag)
            shutil.rmtree(job_dir, ignore_errors=True)


class _ProgressReporter:
    """Turns ComfyUI progress into the dicts callers see (RunPod progress_update, the task API).

    Updates come from two places (ComfyUI's sampler steps, and the long-form encoder counting
    finished windows); the percentage a user sees never goes backwards between them.
    """

    def __init__(self, ctx: JobContext, windows: int):
        self.ctx = ctx
        self.windows = windows
        self.window = 0
        self.percent = 0.0

    def __call__(self, update: dict) -> None:
        if self.ctx.on_progress is None:
            return
        self.percent = max(self.percent, float(update.get("percent") or 0.0))
        self.windows = max(self.windows, int(update.get("windows") or 0))
        self.window = max(self.window, int(update.get("window") or 0))
        update = {**update, "percent": self.percent}
        try:
            self.ctx.on_progress(update)
        except Exception:  # progress is best effort: never fail a job over it
            log.exception("job=%s progress callback failed", self.ctx.job_id)

    def comfy(self, p: Progress) -> None:
        if p.window is None:
            # Model loading before the first window, the video writer after the last one: the
            # bar holds where it is and the message says what ComfyUI is doing.
            self(
                {
                    "stage": "sampling" if self.window else "loading",
                    "message": p.message,
                    "percent": self.percent,
                    "window": self.window or None,
                    "windows": self.windows,
                    "elapsed_s": round(p.elapsed_s, 1),
                    "eta_s": None,
                }
            )
            return
        windows = max(p.windows or self.windows, p.window)
        done = (p.window - 1 + (p.value / p.max if p.max else 0)) / max(windows, 1)
        eta = p.elapsed_s / done - p.elapsed_s if done > 0 else None
        self(
            {
                "stage": "sampling",
                "message": p.message,
                "percent": round(100 * min(done, 1.0), 1),
                "window": p.window,
                "windows": windows,
                "elapsed_s": round(p.elapsed_s, 1),
                "eta_s": round(eta, 1) if eta is not None else None,
            }
        )


class OrderedProgress:
    """Posts progress updates one after another, in order, from one thread of its own.

    runpod.serverless.progress_update posts every update from a new thread, so two updates close
    together can reach RunPod in either order (and /status then shows the older one), and a late
    one can land after the job's result. Here a single thread sends them in turn; updates that
    queue up behind a slow post are coalesced per window (the newest of each run is sent), and
    `close()` sends what is left before the result goes out.
    """

    def __init__(self, send: Callable[[dict], None], job_id: str = ""):
        self._send = send
        self._job_id = job_id
        self._pending: list[dict] = []
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{job_id}", daemon=True)
        self._thread.start()

    def __call__(self, update: dict) -> None:
        with self._wake:
            if self._closed:
                return
            if self._pending and self._pending[-1].get("window") == update.get("window"):
                self._pending[-1] = update
            else:
                self._pending.append(update)
            self._wake.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("job=%s progress updates still sending after %.0fs", self._job_id, timeout_s)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return  # closed, and everything was sent
                update = self._pending.pop(0)
            try:
                self._send(update)
            except Exception:  # progress is best effort: never fail a job over it
                log.exception("job=%s progress update could not be sent", self._job_id)


def _wants_long_form(request: Request, media: JobMedia, settings: Settings) -> bool:
    if request.long_form is not None:
        return request.long_form
    return media.audio_seconds > settings.longform_threshold_s


def _final_video(files: list[Path], job_dir: Path) -> Path:
    """Move ComfyUI's output into the job folder, so ComfyUI's cleanup cannot take it."""
    if not files:
        raise WorkerError("ComfyUI finished but its output node wrote no video")
    target = job_dir / "result.mp4"
    shutil.move(str(files[0]), target)
    return target
