"""The HTTP routes of the LightX2V task API (API.md §5), over the store and the runner.

Routes, bodies, status values and HTTP codes follow LightX2V's server (lightx2v/server/api):
create (JSON, with or without the trailing slash, and multipart) answers
`{task_id, task_status: "pending", save_result_path}` or 503 when the queue is full; status,
result stream, queue status, cancel, file download below outputs/ only (403 elsewhere), service
status and metadata. Where LightX2V answers 500 for a caller's mistake, this service answers
4xx with `{"detail": "<field>: <problem>"}`: 400 bad input, 404 unknown task, 409 a task id in
use or a result path held by an unfinished task, 413 a body over LIGHTX2V_MAX_UPLOAD_MB, 415 a
form that is not multipart, 422 a malformed body.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .. import __version__
from ..errors import InputError
from ..settings import MiB, Settings
from . import translate
from .limits import BodyLimit
from .runner import RunTask, TaskRunner, pipeline_task
from .schema import StopTaskResponse, TaskResponse, VideoTaskRequest
from .store import COMPLETED, FAILED, PENDING, PROCESSING, DuplicateTask, QueueFull, Task, TaskStore

log = logging.getLogger("infinitetalk")

_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UPLOADS = ("image_file", "audio_file")
# Form fields that carry JSON (LightX2V's parse_form_request decodes the same ones).
_JSON_FORM_FIELDS = ("target_shape", "talk_objects")
WORKFLOWS = ("I2V_single", "I2V_multi", "V2V_single", "V2V_multi")


class TaskService:
    """Creating tasks: LightX2V request -> validated §1 job input -> a pending row in the store."""

    def __init__(self, settings: Settings, store: TaskStore, runner: TaskRunner):
        self.settings = settings
        self.store = store
        self.runner = runner
        self.inputs = settings.lightx2v_cache_dir / "inputs"
        self.outputs = settings.lightx2v_cache_dir / "outputs"

    def new_task_id(self, requested: str | None) -> str:
        if requested is None or requested == "":
            return uuid.uuid4().hex
        if not _TASK_ID.fullmatch(requested):
            raise InputError("task_id", "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return requested

    def check_room(self) -> None:
        """Fail fast (before uploads are read or masks decoded) when the queue is full."""
        active = sum(self.store.counts()[s] for s in (PENDING, PROCESSING))
        if active >= self.settings.lightx2v_max_queue_size:
            raise QueueFull(f"Task queue is full (max {self.settings.lightx2v_max_queue_size} tasks)")

    def create(self, task_id: str, message: VideoTaskRequest) -> TaskResponse:
        save = self._result_path(message.save_result_path or task_id)
        job, names, request = translate.parse(message, self.settings)
        replaced = self.store.create(task_id, job, names, save, self.settings.lightx2v_max_queue_size)
        if replaced:
            (self.outputs / save).unlink(missing_ok=True)
            log.info("task=%s takes over %s from finished task %s, which is forgotten", task_id, save, replaced)
        log.info("task=%s created: workflow=%s result=%s", task_id, request.workflow, save)
        self.runner.notify()
        return TaskResponse(task_id=task_id, task_status=PENDING, save_result_path=save)

    def _result_path(self, requested: str) -> str:
        """The result file's path relative to outputs/, .mp4 added; never outside outputs/."""
        path = PurePosixPath(requested.replace("\\", "/"))
        if path.is_absolute():
            try:
                path = PurePosixPath(Path(requested).resolve().relative_to(self.outputs.resolve()))
            except ValueError:
                raise InputError(
                    "save_result_path", f"must be inside the results folder {self.outputs}; give a relative path"
                ) from None
        if not path.parts or any(p in ("..", ".") for p in path.parts) or path.name.startswith("."):
            raise InputError("save_result_path", f"{requested!r} is not a file name below the results folder")
        if path.suffix.lower() != ".mp4":
            path = path.with_name(path.name + ".mp4")
        return str(path)


def create_app(settings: Settings, run_task: RunTask | None = None) -> FastAPI:
    """The service; `run_task` defaults to the shared pipeline against settings.comfy_url."""
    cache = settings.lightx2v_cache_dir
    inputs = cache / "inputs"
    # Uploaded files are task inputs: the request parser and media read them like volume files.
    settings = settings.replace(extra_input_roots=(*settings.extra_input_roots, inputs))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for folder in (cache, inputs, cache / "outputs"):
            folder.mkdir(parents=True, exist_ok=True)
        store = TaskStore(cache / "tasks.sqlite3")
        runner = TaskRunner(store, run_task or pipeline_task(settings), cache, settings.lightx2v_result_ttl_h * 3600)
        state["service"] = TaskService(settings, store, runner)
        runner.start()
        log.info("lightx2v task service ready: data in %s, ComfyUI at %s", cache, settings.comfy_url)
        try:
            yield
        finally:
            runner.stop()
            store.close()

    app = FastAPI(
        title="InfiniteTalk (LightX2V-compatible task API)",
        version=__version__,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.lightx2v_max_upload_mb * MiB)

    def service() -> TaskService:
        return state["service"]

    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=400)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, e: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    @app.exception_handler(DuplicateTask)
    async def duplicate(request: Request, e: DuplicateTask) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _sentence(e.errors())}, status_code=422)

    @app.get("/", include_in_schema=False)
    def docs() -> RedirectResponse:
        return RedirectResponse(url="/docs")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    # --- tasks ------------------------------------------------------------------------------

    @app.post("/v1/tasks/video", response_model=TaskResponse)
    @app.post("/v1/tasks/video/", response_model=TaskResponse, include_in_schema=False)
    @app.post("/v1/tasks/", response_model=TaskResponse, deprecated=True)
    async def create_video_task(message: VideoTaskRequest) -> TaskResponse:
        svc = service()
        task_id = svc.new_task_id(message.task_id)
        svc.check_room()
        return await run_in_threadpool(svc.create, task_id, message)

    @app.post("/v1/tasks/video/form", response_model=TaskResponse)
    async def create_video_task_form(request: Request) -> TaskResponse:
        svc = service()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise HTTPException(
                status_code=415,
                detail="send multipart/form-data (image_file, audio_file and form fields), "
                "or POST JSON to /v1/tasks/video",
            )
        form = await request.form(max_files=len(_UPLOADS), max_fields=64)
        try:
            fields: dict[str, Any] = {}
            uploads: dict[str, UploadFile] = {}
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if name not in _UPLOADS:
                        raise InputError(name, f"unknown file field; upload {' and '.join(_UPLOADS)}")
                    uploads[name] = value
                elif value != "":
                    fields[name] = _form_value(name, value)
            task_id = svc.new_task_id(fields.get("task_id"))
            svc.check_room()
            folder = svc.inputs / task_id
            try:
                for name, upload in uploads.items():
                    if upload.filename or upload.size:
                        target = "image_path" if name == "image_file" else "audio_path"
                        fields[target] = str(await run_in_threadpool(_save_upload, upload, folder, name))
                message = _validated(fields)
                return await run_in_threadpool(svc.create, task_id, message)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        finally:
            await form.close()

    @app.get("/v1/tasks/")
    def list_tasks() -> dict:
        svc = service()
        return {t: _status(svc.store.get(t)) for t in svc.store.ids()}

    @app.get("/v1/tasks/queue/status")
    def queue_status() -> dict:
        svc = service()
        counts = svc.store.counts()
        active = counts[PENDING] + counts[PROCESSING]
        size = svc.settings.lightx2v_max_queue_size
        return {
            "is_processing": svc.runner.current_task is not None,
            "current_task": svc.runner.current_task,
            "pending_count": counts[PENDING],
            "active_count": active,
            "queue_size": size,
            "queue_available": max(size - active, 0),
        }

    @app.get("/v1/tasks/{task_id}/status")
    def task_status(task_id: str) -> dict:
        task = service().store.get(task_id)
        if task is None:
            raise HTTPException(status_code=404, detail="Task not found")
        return _status(task)

    @app.get("/v1/tasks/{task_id}/result")
    def task_result(task_id: str) -> FileResponse:
        svc = service()
        task = svc.store.get(task_id)
        if task is None:
            raise HTTPException(status_code=404, detail="Task not found")
        if task.status != COMPLETED:
            raise HTTPException(status_code=404, detail=f"Task not completed (status: {task.status})")
        return _file(svc.outputs, task.save_result_path)

    @app.delete("/v1/tasks/all/running", response_model=StopTaskResponse)
    async def stop_all() -> StopTaskResponse:
        svc = service()
        for task_id in svc.store.ids(active_only=True):
            await run_in_threadpool(svc.runner.cancel, task_id)
        return StopTaskResponse(stop_status="success", reason="All tasks stopped successfully.")

    @app.delete("/v1/tasks/{task_id}", response_model=StopTaskResponse)
    async def stop_task(task_id: str) -> StopTaskResponse:
        result = await run_in_threadpool(service().runner.cancel, task_id)
        return StopTaskResponse(stop_status=result.stop_status, reason=result.reason)

    # --- files and service ------------------------------------------------------------------

    @app.get("/v1/files/download/{file_path:path}")
    def download(file_path: str) -> FileResponse:
        return _file(service().outputs, file_path)

    @app.get("/v1/service/status")
    def service_status() -> dict:
        svc = service()
        counts = svc.store.counts()
        current = svc.runner.current_task
        return {
            "service_status": "busy" if current else "idle",
            "current_task": current,
            "active_tasks": svc.store.processing_ids(),
            "pending_tasks": counts[PENDING],
            "queue_size": svc.settings.lightx2v_max_queue_size,
            "total_tasks": sum(counts.values()),
            "completed_tasks": counts[COMPLETED],
            "failed_tasks": counts[FAILED],
        }

    @app.get("/v1/service/metadata")
    def service_metadata() -> dict:
        return _metadata(service().settings)

    return app


def _status(task: Task | None) -> dict | None:
    if task is None:
        return None
    status = {
        "task_id": task.task_id,
        "status": task.status,
        "start_time": _iso(task.start_time),
        "end_time": _iso(task.end_time),
        "error": task.error,
        "error_type": task.error_type,
        "save_result_path": task.save_result_path,
    }
    # Additions LightX2V clients ignore: where a running task is, and what a finished one made.
    if task.status == PROCESSING and task.progress:
        status["progress"] = task.progress
    if task.metadata:
        status["metadata"] = task.metadata
    return status


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat() if epoch is not None else None


def _file(outputs: Path, relative: str) -> FileResponse:
    root = outputs.resolve()
    path = (outputs / relative).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(status_code=403, detail="Access to this file is not allowed")
    if not path.is_file() or path.name.startswith("."):
        raise HTTPException(status_code=404, detail=f"File not found: {relative}")
    media_type = "video/mp4" if path.suffix.lower() in (".mp4", ".mov") else "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=path.name)


def _form_value(name: str, value: str) -> Any:
    if name in _JSON_FORM_FIELDS and value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except ValueError:
            raise InputError(name, "must contain valid JSON, e.g. [480, 832]") from None
    return value


def _validated(fields: dict) -> VideoTaskRequest:
    try:
        return VideoTaskRequest.model_validate(fields)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_input=False)) from None


def _save_upload(upload: UploadFile, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # The content decides the type later; the original suffix only helps a human reading the folder.
    suffix = PurePosixPath(upload.filename or "").suffix.lower()
    target = folder / (name + (suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""))
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)
    return target


def _sentence(errors: list[dict]) -> str:
    """Pydantic's error list as one sentence per field: "talk_objects[0].audio: Field required"."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ""
        for p in loc:
            field += f"[{p}]" if p.isdigit() else (f".{p}" if field else p)
        message = err.get("msg", "is invalid")
        if err.get("type") == "extra_forbidden":
            message = "unknown field; see /docs for the fields this service takes"
        parts.append(f"{field or 'body'}: {message}")
    return "; ".join(parts)


def _metadata(settings: Settings) -> dict:
    from ..models import load_manifest

    models = [str(m.destination) for m in load_manifest()]
    return {
        "nproc_per_node": 1,
        "model_cls": "infinitetalk",
        "model_path": str(settings.comfy_dir / "models"),
        "engine": "ComfyUI + ComfyUI-WanVideoWrapper",
        "workflows": list(WORKFLOWS),
        "models": models,
        "fps": translate.FPS,
        "max_queue_size": settings.lightx2v_max_queue_size,
        "max_upload_mb": settings.lightx2v_max_upload_mb,
        "result_ttl_h": settings.lightx2v_result_ttl_h,
        "version": __version__,
    }
