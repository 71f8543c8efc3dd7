"""RunPod entry point: hands each job to the pipeline and its result back to RunPod.

    python handler.py                                   # a worker on RunPod
    python handler.py --test_input '{"input": {...}}'   # one local job, no RunPod
    python handler.py --rp_serve_api                    # RunPod's local HTTP API (/run, /status)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading

import runpod
from runpod.serverless.modules import rp_progress

from infinitetalk_worker import multitalk
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.pipeline import JobContext, OrderedProgress, Pipeline
from infinitetalk_worker.settings import Settings

_pipeline: Pipeline | None = None


def _get_pipeline() -> Pipeline:
    # Built on the first job, not at import, so a bad setting is reported as that job's error.
    global _pipeline
    if _pipeline is None:
        _pipeline = Pipeline(Settings.from_env())
    return _pipeline


def _progress_poster(job: dict) -> OrderedProgress | None:
    # Outside RunPod (--test_input, --rp_serve_api) there is nobody to send progress to; the
    # pipeline's log lines carry it. On RunPod the SDK's own sender (one thread per update) is
    # called from one thread, so updates arrive in order and none after the result.
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return None
    return OrderedProgress(lambda update: rp_progress._thread_target(job, update), str(job.get("id")))


async def handler(job: dict) -> dict:
    """Run one RunPod job. Async so that RunPod's event loop keeps serving heartbeats and stop
    signals while the video renders: a cancelled or timed-out job interrupts ComfyUI."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(_run, job, cancel)
    except asyncio.CancelledError:
        cancel.set()  # the pipeline's thread interrupts ComfyUI and removes the job's files
        raise


def _run(job: dict, cancel: threading.Event) -> dict:
    job_id = str(job.get("id") or "local")
    job_input = job.get("input")
    progress = _progress_poster(job)
    ctx = JobContext(job_id=job_id, on_progress=progress, cancel=cancel, s3_config=job.get("s3Config"))
    try:
        return _answer(job_input, ctx)
    finally:
        if progress is not None:
            progress.close()


def _answer(job_input: object, ctx: JobContext) -> dict:
    try:
        pipeline = _get_pipeline()
    except Exception as e:  # a ConfigError names the variable; anything else is a bug
        logging.getLogger("infinitetalk").exception("job=%s: the worker could not start", ctx.job_id)
        return {"error": f"worker configuration: {e}", "refresh_worker": True}
    if isinstance(job_input, dict) and multitalk.is_multitalk(job_input):
        try:
            translated = multitalk.to_job_input(job_input)
        except InputError as e:
            return {"error": e.message}
        return multitalk.shape_result(pipeline.run_job(translated, ctx), ctx.job_id)
    return pipeline.run_job(job_input, ctx)


def _configure_logging() -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    _configure_logging()
    runpod.serverless.start({"handler": handler})
