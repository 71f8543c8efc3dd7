"""The ComfyUI client: stage a job's media, run its graph, turn what ComfyUI says into sentences.

ComfyUI talks on two channels. HTTP carries commands (`/prompt`, `/history`, `/queue`,
`/interrupt`); a websocket per client id carries what happens while a prompt runs. The reliable
end of a prompt is `executing` with `node: null` for its prompt id; `/history` then holds the
outcome, where an execution error and an interrupt both read `status_str: "error"` and the last
status message tells which. A websocket that drops is reconnected and reconciled with
`/history`; a ComfyUI that stops answering for `COMFY_DEAD_AFTER_S` is declared dead, because a
worker whose ComfyUI died can only fail every job it gets until RunPod replaces it.

Every failure leaves as one of the project's errors, with the sentence the user reads:
`ComfyError` (rejected graph, failed node, out of GPU memory), `ComfyUnavailable` (down or
died: the pipeline asks for a fresh worker), `JobTimeout` and `JobCancelled` (interrupted).

A job's files live in one subfolder named by its tag: `input/<tag>/` for its media (`stage`),
`output/<tag>/` for what the graph writes (its filename_prefix is `<tag>/...`). Two jobs never
share a name, and `cleanup(tag)` removes exactly one job's files and history entries.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import requests
import websocket

from .errors import ComfyError, ComfyUnavailable, JobCancelled, JobTimeout
from .settings import Settings

if TYPE_CHECKING:
    from .workflows import Graph

log = logging.getLogger("infinitetalk")

# How often the run loop looks at the deadline and the cancel event while the websocket is quiet.
_POLL_S = 0.25
# Small HTTP calls (history, queue, interrupt) answer in milliseconds even while a GPU is busy:
# ComfyUI serves HTTP on its own event loop, apart from the execution thread.
_HTTP_TIMEOUT_S = 10.0
# Validating a large graph reads model folders; allow it more time.
_PROMPT_TIMEOUT_S = 60.0
# /history is written as a prompt ends; a fetch right after the end signal may find it lagging.
_HISTORY_WAIT_S = 5.0
# Progress of nodes other than the sampler (a frame counter of the video writer, say) can tick
# thousands of times; the caller turns each call into an HTTP request to RunPod.
_NODE_PROGRESS_EVERY_S = 1.0

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_MODEL_SUFFIXES = (".safetensors", ".gguf", ".ckpt", ".pt", ".pth", ".bin", ".sft")
_MODELS_FOLDER = re.compile(r"'(?:[^']*/)?(models/[^']+)'")
_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
_FAILURES = ("execution_error", "execution_interrupted")
# The nodes whose progress bar counts InfiniteTalk's sampling steps, window after window.
_SAMPLERS = ("WanVideoSampler", "WanVideoSamplerv2")


@dataclass
class Progress:
    """One progress report of a run.

    Sampler steps carry `window`/`windows` (InfiniteTalk samples window after window); other
    nodes (model loading, the video writer) report with `window` None, and a node that just
    started reports value 0 of max 1.
    """

    node_type: str | None
    value: int
    max: int
    window: int | None
    windows: int | None
    elapsed_s: float
    message: str


@dataclass
class RunOutcome:
    prompt_id: str
    outputs: dict[str, dict]
    files: list[Path]
    frames_dir: Path | None


class ComfyClient:
    """One ComfyUI server, used by one worker process; safe to share between threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._url = settings.comfy_url.rstrip("/")
        self._ready = False
        self._lock = threading.Lock()
        self._staged_tags: set[str] = set()
        self._prompts: dict[str, list[str]] = {}
        self._local = threading.local()

    # --- readiness --------------------------------------------------------------------------

    def ensure_ready(self, timeout_s: float | None = None) -> None:
        """Wait for ComfyUI to answer; checked once, and again after any failure to reach it."""
        if self._ready:
            return
        timeout_s = self.settings.comfy_ready_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        if not self._answers(within_s=timeout_s):
            raise ComfyUnavailable(
                f"ComfyUI did not answer at {self._url} within {timeout_s:g} s; "
                "the worker will be replaced, retry the job"
            )
        self._ready = True
        log.info("comfy: ready at %s after %.1fs", self._url, time.monotonic() - started)

    # --- files ------------------------------------------------------------------------------

    def stage(self, tag: str, files: Mapping[str, Path]) -> dict[str, str]:
        """Put a job's files into ComfyUI's input/<tag>/ and return the names its loaders take.

        A file becomes "<tag>/<key><suffix>" (hard-linked when the file system allows, else
        copied); a folder (the speaker masks) becomes the absolute path of its staged copy.
        """
        started = time.monotonic()
        folder = self.settings.comfy_input_dir / _checked_name(tag, "job tag")
        with self._lock:
            self._staged_tags.add(tag)
        folder.mkdir(parents=True, exist_ok=True)
        staged: dict[str, str] = {}
        try:
            for key, source in files.items():
                source = Path(source)
                if source.is_dir():
                    target = folder / _checked_name(key, "staged key")
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(source, target, copy_function=_link_or_copy)
                    staged[key] = str(target.resolve())
                else:
                    name = _checked_name(key, "staged key") + source.suffix.lower()
                    _link_or_copy(source, folder / name)
                    staged[key] = f"{tag}/{name}"
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("job=%s comfy stage: %d item(s) in %.2fs", tag, len(staged), time.monotonic() - started)
        return staged

    def cleanup(self, tag: str) -> None:
        """Remove this job's files from input/, output/ and temp/, and its history entries."""
        started = time.monotonic()
        name = _checked_name(tag, "job tag")
        with self._lock:
            self._staged_tags.discard(tag)
            prompt_ids = self._prompts.pop(tag, [])
        s = self.settings
        removed = 0
        for root in (s.comfy_input_dir, s.comfy_output_dir, s.comfy_temp_dir):
            if (root / name).exists():
                shutil.rmtree(root / name, ignore_errors=True)
                removed += 1
        try:
            for prompt_id in prompt_ids:
                entry = self._history(prompt_id)
                # Nodes may write outside the job's folder (previews go to temp/ under their own
                # names); the history lists exactly what this prompt wrote.
                for path in self._listed_files(entry.get("outputs") or {}):
                    path.unlink(missing_ok=True)
                    removed += 1
            if prompt_ids:
                self._post("/history", {"delete": prompt_ids})
        except requests.RequestException as e:
            log.warning("job=%s comfy cleanup: ComfyUI did not answer (%s); history left", tag, type(e).__name__)
        log.info(
            "job=%s comfy cleanup: %d path(s), %d prompt(s) in %.2fs",
            tag, removed, len(prompt_ids), time.monotonic() - started,
        )

    # --- running ----------------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop what ComfyUI runs: only `prompt_id` when given (a no-op if it is not running)."""
        self._post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def run(
        self,
        graph: Graph,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> RunOutcome:
        """Queue the graph, stream its progress, and return what its output node wrote.

        `deadline` is a time.monotonic() value; past it the run is interrupted (JobTimeout).
        Setting `cancel` interrupts it too (JobCancelled).
        """
        self.ensure_ready()
        run = _Run(graph, on_progress, self._tags_of(graph))
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout("the job's deadline passed before ComfyUI could start it; raise JOB_TIMEOUT_S")
            if cancel is not None and cancel.is_set():
                raise JobCancelled("the job was cancelled before ComfyUI started it")
            stream = _Stream(self._ws_url(run.client_id))
            if not self._connect(stream):
                raise self._died(run)
            try:
                self._queue(run)
                self._follow(run, stream, deadline, cancel)
            finally:
                stream.close()
            outcome = self._outcome(run)
        except ComfyUnavailable as e:
            self._ready = False
            log.error("job=%s comfy run failed after %.1fs: %s", run.label, run.elapsed(), e)
            raise
        except ComfyError as e:
            log.warning("job=%s comfy run failed after %.1fs: %s", run.label, run.elapsed(), e)
            raise
        log.info(
            "job=%s comfy run: %s prompt %s finished in %.1fs, %d file(s)",
            run.label, graph.name, run.prompt_id, run.elapsed(), len(outcome.files),
        )
        return outcome

    def _queue(self, run: _Run) -> None:
        body = {"prompt": run.graph.prompt, "client_id": run.client_id}
        try:
            response = self._session().post(self._url + "/prompt", json=body, timeout=_PROMPT_TIMEOUT_S)
        except requests.RequestException:
            raise self._died(run) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        prompt_id = answer.get("prompt_id")
        if prompt_id:
            run.prompt_id = str(prompt_id)
            with self._lock:
                for tag in run.tags:
                    self._prompts.setdefault(tag, []).append(run.prompt_id)
        if response.status_code == 400 or answer.get("node_errors"):
            # A 200 with node_errors means ComfyUI queued only the valid branch: take it back.
            if run.prompt_id:
                self._take_back(run.prompt_id)
            raise _rejection(answer, run.graph)
        if response.status_code != 200 or not run.prompt_id:
            raise ComfyError(f"ComfyUI answered HTTP {response.status_code} to the workflow instead of queuing it")
        log.info(
            "job=%s comfy queue: %s as prompt %s (%s window(s))",
            run.label, run.graph.name, run.prompt_id, run.graph.windows,
        )

    def _follow(self, run: _Run, stream: _Stream, deadline: float | None, cancel: threading.Event | None) -> None:
        """Read the websocket until our prompt ends; interrupt it on deadline or cancel."""
        reconnects = 0
        quiet_since = time.monotonic()
        while True:
            if cancel is not None and cancel.is_set():
                self._halt(run, stream)
                raise JobCancelled(f"the job was cancelled {run.where()}; ComfyUI was interrupted")
            if deadline is not None and time.monotonic() >= deadline:
                self._halt(run, stream)
                raise JobTimeout(
                    f"the job ran out of time after {_duration(run.elapsed())} in ComfyUI and was "
                    f"stopped {run.where()}; raise JOB_TIMEOUT_S or send shorter audio"
                )
            try:
                message = stream.recv(_POLL_S)
            except _Dropped:
                reconnects += 1
                if reconnects > self.settings.comfy_ws_reconnects or not self._connect(stream):
                    raise self._died(run) from None
                log.warning("job=%s comfy websocket dropped, reconnected (%d)", run.label, reconnects)
                quiet_since = time.monotonic()
                if self._reconcile(run):
                    return
                continue
            now = time.monotonic()
            if message is None:
                # A frozen ComfyUI keeps its socket open; silence alone is normal (model loading),
                # silence plus an unanswered /system_stats is not.
                if now - quiet_since >= self.settings.comfy_dead_after_s:
                    if not self._answers(within_s=self.settings.comfy_dead_after_s):
                        raise self._died(run)
                    quiet_since = time.monotonic()
                continue
            quiet_since = now
            if run.handle(message):
                return

    def _reconcile(self, run: _Run) -> bool:
        """After a reconnect: True when /history says the prompt ended while we were away."""
        try:
            if self._history(run.prompt_id):
                return True
            state = self._queue_state(run.prompt_id)
            # It may have ended between the two questions: history is written first.
            if state == "gone" and self._history(run.prompt_id):
                return True
        except requests.RequestException:
            raise self._died(run) from None
        if state == "gone":
            raise ComfyUnavailable(
                f"ComfyUI lost the job {run.where()} (it restarted?); the worker will be replaced, retry the job"
            )
        return False

    def _halt(self, run: _Run, stream: _Stream) -> None:
        """Take our prompt off the queue or interrupt it, and wait briefly for ComfyUI to agree."""
        give_up = time.monotonic() + self.settings.comfy_interrupt_wait_s
        next_check = 0.0
        while time.monotonic() < give_up:
            if time.monotonic() >= next_check:
                # Repeated because a pending prompt may start between the two calls.
                if not self._take_back(run.prompt_id) or self._queue_state(run.prompt_id) == "gone":
                    break
                next_check = time.monotonic() + 1.0
            try:
                message = stream.recv(_POLL_S)
            except _Dropped:
                time.sleep(_POLL_S)
                continue
            if message is not None and run.handle(message):
                break
        else:
            log.warning("job=%s comfy: prompt %s did not confirm the interrupt", run.label, run.prompt_id)
        log.info("job=%s comfy interrupt: prompt %s stopped %s", run.label, run.prompt_id, run.where())

    def _take_back(self, prompt_id: str) -> bool:
        """Interrupt our prompt if it runs, delete it if it waits; False if ComfyUI is unreachable.

        Both are safe for other jobs: an interrupt with a prompt_id acts only when that prompt is
        the one running, and the delete names our prompt alone.
        """
        reached = False
        for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
            try:
                self._post(path, body)
                reached = True
            except requests.HTTPError:
                reached = True
            except requests.RequestException:
                pass
        return reached

    def _outcome(self, run: _Run) -> RunOutcome:
        entry = self._finished_entry(run)
        status = entry.get("status") or {}
        failed = status["status_str"] == "error" if "status_str" in status else run.failure is not None
        if failed:
            raise _failure(_last_failure(status) or run.failure, run)
        outputs = entry.get("outputs") or {}
        graph = run.graph
        node_output = outputs.get(graph.output_node)
        node_type = run.node_type(graph.output_node)
        if not node_output:
            raise ComfyError(f"ComfyUI finished, but the output node '{node_type}' reported nothing")
        files = self._listed_files({graph.output_node: node_output})
        files.sort(key=lambda p: p.suffix.lower() not in _VIDEO_SUFFIXES)
        frames_dir = None
        if graph.frames_dir is not None:
            frames_dir = _reported_folder(node_output, Path(graph.frames_dir))
            if frames_dir is None:
                raise ComfyError(
                    f"ComfyUI finished, but the output node '{node_type}' did not report the frames folder"
                )
        elif not files:
            raise ComfyError(
                f"ComfyUI finished, but the file the output node '{node_type}' wrote is not in "
                f"{self.settings.comfy_output_dir} — is COMFY_DIR ComfyUI's folder?"
            )
        return RunOutcome(prompt_id=run.prompt_id, outputs=outputs, files=files, frames_dir=frames_dir)

    def _finished_entry(self, run: _Run) -> dict:
        give_up = time.monotonic() + _HISTORY_WAIT_S
        while True:
            try:
                entry = self._history(run.prompt_id)
            except requests.RequestException:
                raise self._died(run) from None
            if entry:
                return entry
            if time.monotonic() >= give_up:
                raise ComfyError(f"ComfyUI ended prompt {run.prompt_id} but keeps no record of it in /history")
            time.sleep(_POLL_S)

    def _listed_files(self, outputs: Mapping[str, Any]) -> list[Path]:
        """Files that output entries name, resolved on this machine and kept only inside
        output/ or temp/ (never trust `fullpath`: it is written by the other side)."""
        roots = {"output": self.settings.comfy_output_dir, "temp": self.settings.comfy_temp_dir}
        files: list[Path] = []
        for node_output in outputs.values():
            if not isinstance(node_output, dict):
                continue
            for items in node_output.values():
                for item in items if isinstance(items, list) else ():
                    if not (isinstance(item, dict) and isinstance(item.get("filename"), str)):
                        continue
                    root = roots.get(item.get("type", "output"))
                    if root is None:
                        continue
                    root = root.resolve()
                    path = (root / str(item.get("subfolder") or "") / item["filename"]).resolve()
                    if path.is_relative_to(root) and path.is_file() and path not in files:
                        files.append(path)
        return files

    # --- plumbing ---------------------------------------------------------------------------

    def _tags_of(self, graph: Graph) -> list[str]:
        """The staged jobs this graph belongs to: its inputs and filename_prefix start with "<tag>/"."""
        with self._lock:
            tags = set(self._staged_tags)
        found = set()
        for node in graph.prompt.values():
            for value in (node.get("inputs") or {}).values():
                if isinstance(value, str) and "/" in value and value.split("/", 1)[0] in tags:
                    found.add(value.split("/", 1)[0])
        return sorted(found)

    def _died(self, run: _Run) -> ComfyUnavailable:
        return ComfyUnavailable(
            f"ComfyUI stopped responding {run.where()}; the worker will be replaced, retry the job"
        )

    def _connect(self, stream: _Stream) -> bool:
        """Open the websocket, retrying for COMFY_DEAD_AFTER_S; False if ComfyUI stays away."""
        give_up = time.monotonic() + self.settings.comfy_dead_after_s
        while True:
            try:
                stream.connect()
                return True
            except (OSError, websocket.WebSocketException):
                if time.monotonic() >= give_up:
                    return False
                time.sleep(_POLL_S)

    def _answers(self, within_s: float) -> bool:
        give_up = time.monotonic() + within_s
        while True:
            remaining = give_up - time.monotonic()
            try:
                response = self._session().get(self._url + "/system_stats", timeout=max(0.5, min(5.0, remaining)))
                if response.status_code == 200:
                    return True
            except requests.RequestException:
                pass
            if time.monotonic() >= give_up:
                return False
            time.sleep(min(_POLL_S, max(0.0, give_up - time.monotonic())))

    def _history(self, prompt_id: str) -> dict:
        response = self._session().get(f"{self._url}/history/{prompt_id}", timeout=_HTTP_TIMEOUT_S)
        response.raise_for_status()
        body = response.json()
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else {}

    def _queue_state(self, prompt_id: str) -> str | None:
        """ "running", "pending", "gone" (ended, deleted, never known), or None: no answer."""
        try:
            response = self._session().get(self._url + "/queue", timeout=_HTTP_TIMEOUT_S)
            body = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        for state in ("running", "pending"):
            for item in body.get(f"queue_{state}") or []:
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return state
        return "gone"

    def _post(self, path: str, body: dict) -> None:
        self._session().post(self._url + path, json=body, timeout=_HTTP_TIMEOUT_S).raise_for_status()

    def _session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe; two jobs may run at once.
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _ws_url(self, client_id: str) -> str:
        scheme, rest = self._url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"


class _Dropped(Exception):
    """The websocket closed under us."""


class _Stream:
    """The websocket of one run. A reader thread feeds a queue, so waiting for a message never
    blocks past the poll interval, whatever the socket does."""

    _CLOSED = object()

    def __init__(self, url: str):
        self.url = url
        self._ws: websocket.WebSocket | None = None
        self._inbox: queue.Queue = queue.Queue()

    def connect(self) -> None:
        self.close()
        ws = websocket.create_connection(self.url, timeout=_HTTP_TIMEOUT_S)
        ws.settimeout(None)
        inbox: queue.Queue = queue.Queue()
        self._ws, self._inbox = ws, inbox
        threading.Thread(target=self._read, args=(ws, inbox), name="comfy-ws", daemon=True).start()

    @classmethod
    def _read(cls, ws: websocket.WebSocket, inbox: queue.Queue) -> None:
        try:
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    inbox.put(data)
                else:
                    inbox.put(b"")  # binary frames are previews: activity, nothing to read
        except (OSError, websocket.WebSocketException, ValueError):
            pass
        inbox.put(cls._CLOSED)

    def recv(self, timeout: float) -> dict | None:
        """The next message, {} for a frame without one, None when nothing came in time."""
        try:
            data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if data is self._CLOSED:
            self._inbox.put(data)  # stays closed until reconnected
            raise _Dropped()
        if not data:
            return {}
        try:
            message = json.loads(data)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.shutdown()
            except (OSError, websocket.WebSocketException):
                pass
            self._ws = None


class _Run:
    """One queued graph: what it reported so far, where it is, and how it ended."""

    def __init__(self, graph: Graph, on_progress: Callable[[Progress], None] | None, tags: list[str]):
        self.graph = graph
        self.on_progress = on_progress
        self.tags = tags
        self.label = tags[0] if tags else graph.name
        self.client_id = uuid.uuid4().hex
        self.prompt_id = ""
        self.started = time.monotonic()
        self.classes = {str(k): str(v.get("class_type", "?")) for k, v in graph.prompt.items()}
        self.samplers = {k for k, c in self.classes.items() if c in _SAMPLERS}
        self.steps = _sampler_steps(graph, self.samplers)
        self.windows: int | None = graph.windows or None
        self.window: int | None = None
        self.step: tuple[int, int] | None = None
        self.node: str | None = None
        self.failure: tuple[str, dict] | None = None
        self._last_value: dict[str, int] = {}
        self._counted_by_progress: set[str] = set()
        self._last_report: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def node_type(self, node_id: str | None) -> str:
        return self.classes.get(str(node_id), str(node_id))

    def sampling_window(self) -> str | None:
        """ "window 3 of 12" while the sampler runs, else None."""
        if self.node not in self.samplers:
            return None
        window = self.window or 1  # no step done yet: the first window
        if self.step is not None and self.step[0] >= self.step[1] and self.windows and window < self.windows:
            window += 1  # its last step is done: the loop has moved on to the next window
        return f"window {window}" + (f" of {self.windows}" if self.windows else "")

    def where(self) -> str:
        """Where the run is, for error sentences: "during window 3 of 12", "while running ..."."""
        if self.sampling_window():
            return f"during {self.sampling_window()}"
        if self.node is not None:
            return f"while running node '{self.node_type(self.node)}'"
        return "before the run started" if self.prompt_id else "before the job was queued"

    def handle(self, message: dict) -> bool:
        """Take one websocket message; True when it is the end of our prompt."""
        data = message.get("data")
        if not isinstance(data, dict) or not self.prompt_id or data.get("prompt_id") != self.prompt_id:
            return False
        kind = message.get("type")
        if kind == "executing":
            node = data.get("node")
            if node is None:
                return True
            self.node = str(node)
            self._report(self.node_type(self.node), 0, 1, None, f"running {self.node_type(self.node)}")
        elif kind == "progress":
            self._progress(str(data.get("node")), data.get("value"), data.get("max"), by_progress=True)
        elif kind == "progress_state":
            for node_id, state in (data.get("nodes") or {}).items():
                if isinstance(state, dict) and state.get("state") == "running":
                    self._progress(str(node_id), state.get("value"), state.get("max"), by_progress=False)
        elif kind in _FAILURES:
            self.failure = (kind, data)
        return False

    def _progress(self, node: str, value: Any, total: Any, *, by_progress: bool) -> None:
        try:
            value, total = int(value), int(total)
        except (TypeError, ValueError):
            return
        if value <= 0 or total <= 0:
            return  # a node that just started: `executing` said so already
        if node not in self.samplers:
            now = time.monotonic()
            if self._last_value.get(node) == value:
                return  # the `progress` echo of a `progress_state`
            if value < total and now - self._last_report.get(node, 0.0) < _NODE_PROGRESS_EVERY_S:
                return
            self._last_value[node] = value
            self._last_report[node] = now
            kind = self.node_type(node)
            self._report(kind, value, total, None, f"running {kind}, {value}/{total}")
            return
        # ComfyUI sends `progress_state` and then `progress` for the same step; once a node
        # speaks `progress`, that is the one to count (a repeated value there is a new window
        # of a one-step sampler, not an echo).
        last = self._last_value.get(node)
        if by_progress:
            restart = last is not None and (value <= last if node in self._counted_by_progress else value < last)
            self._counted_by_progress.add(node)
        elif node in self._counted_by_progress:
            return
        else:
            restart = last is not None and value < last
        self._last_value[node] = value
        self._sampling(node, value, total, restart)

    def _sampling(self, node: str, value: int, total: int, restart: bool) -> None:
        per = self.steps
        if per is None or total % per:
            per = total // self.windows if self.windows and total % self.windows == 0 else total
        if total > per:
            # One bar over all windows (its max is steps × the loop's own window estimate, which
            # may be one more than the windows it samples), as current wrapper versions report it.
            window = (value - 1) // per + 1
            step, steps = value - (window - 1) * per, per
        else:
            # One bar per window, restarting each time: count the restarts.
            window = 1 if self.window is None else self.window + int(restart)
            step, steps = value, total
        if self.window == window and self.step == (step, steps):
            return  # the `progress` echo of a `progress_state` already reported
        self.window = window
        if self.windows is not None and window > self.windows:
            self.windows = window
        self.step = (step, steps)
        of = f" of {self.windows}" if self.windows else ""
        message = f"sampling window {window}{of}, step {step}/{steps}"
        self._report(self.node_type(node), step, steps, window, message)

    def _report(self, node_type: str, value: int, total: int, window: int | None, message: str) -> None:
        if self.on_progress is None:
            return
        progress = Progress(
            node_type=node_type,
            value=value,
            max=total,
            window=window,
            windows=self.windows if window is not None else None,
            elapsed_s=self.elapsed(),
            message=message,
        )
        try:
            self.on_progress(progress)
        except Exception:  # progress is best effort: a failing callback must not fail the job
            log.exception("job=%s progress callback failed", self.label)


# --- sentences --------------------------------------------------------------------------------


def _rejection(answer: dict, graph: Graph) -> ComfyError:
    """ComfyUI's validation answer (HTTP 400, or 200 with node_errors) as one readable sentence."""
    problems = []
    node_errors = answer.get("node_errors") or {}
    for node_id, info in node_errors.items() if isinstance(node_errors, dict) else ():
        info = info if isinstance(info, dict) else {}
        node_type = info.get("class_type") or (graph.prompt.get(str(node_id)) or {}).get("class_type") or node_id
        for error in info.get("errors") or [{}]:
            problems.append(_node_problem(str(node_type), error if isinstance(error, dict) else {}))
    if not problems:
        error = answer.get("error")
        text = (error.get("message") if isinstance(error, dict) else error) or "no reason given"
        text = str(text).rstrip(".")
        if isinstance(error, dict) and error.get("type") == "invalid_prompt" and "does not exist" in text:
            text += " — is its custom node pack installed in the image?"
        problems.append(text)
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return ComfyError("ComfyUI rejected the workflow: " + "; ".join(problems[:3]) + more)


def _node_problem(node_type: str, error: dict) -> str:
    extra = error.get("extra_info") if isinstance(error.get("extra_info"), dict) else {}
    input_name = extra.get("input_name")
    head = f"node '{node_type}'" + (f" input '{input_name}'" if input_name else "")
    kind = error.get("type")
    message = str(error.get("message") or kind or "invalid").rstrip(".")
    details = str(error.get("details") or "")
    received = extra.get("received_value")
    if kind == "value_not_in_list":
        folder = _models_folder(extra.get("input_config"))
        if folder or str(received).lower().endswith(_MODEL_SUFFIXES):
            where = f"the models folder ({folder})" if folder else "the models folder"
            return f"{head}: '{received}' not in {where} — is the model volume mounted?"
        return f"{head}: '{received}' is not one of the allowed values"
    if kind == "required_input_missing":
        return f"{head}: required input is missing"
    if kind == "custom_validation_failed" and " - " in details:
        return f"{head}: {details.split(' - ', 1)[1]}"
    if kind == "invalid_input_type" and received is not None:
        return f"{head}: {message} (got '{received}')"
    if kind == "exception_during_validation":
        return f"{head}: {message} ({extra.get('exception_type', 'error')} {details})"
    if details and details != input_name and details not in message:
        return f"{head}: {message} ({details})"
    return f"{head}: {message}"


def _models_folder(input_config: Any) -> str | None:
    """The models folder a model picker lists, from its tooltip ("...'ComfyUI/models/vae' -folder")."""
    if isinstance(input_config, list) and len(input_config) > 1 and isinstance(input_config[1], dict):
        match = _MODELS_FOLDER.search(str(input_config[1].get("tooltip", "")))
        if match:
            return match.group(1)
    return None


def _last_failure(status: dict) -> tuple[str, dict] | None:
    """The error or interrupt that ended a prompt, from its /history status messages."""
    for entry in reversed(status.get("messages") or []):
        if isinstance(entry, list) and len(entry) == 2 and entry[0] in _FAILURES:
            return entry[0], entry[1] if isinstance(entry[1], dict) else {}
    return None


def _failure(failure: tuple[str, dict] | None, run: _Run) -> ComfyError:
    if failure is None:
        return ComfyError(f"ComfyUI reported the run as failed {run.where()} without saying why")
    kind, data = failure
    if data.get("node_id") is not None:
        run.node = str(data["node_id"])
    if kind == "execution_interrupted":
        return JobCancelled(f"ComfyUI's run was interrupted {run.where()} by someone else; retry the job")
    node_type = data.get("node_type") or run.node_type(run.node)
    exception = str(data.get("exception_type") or "error").rsplit(".", 1)[-1]
    text = str(data.get("exception_message") or "").strip()
    first_line = text.splitlines()[0] if text else "no message"
    window = run.sampling_window()
    if exception == "OutOfMemoryError" or any(s in text.lower() for s in ("out of memory", "allocation on device")):
        doing = f"sampling {window}" if window else f"running node '{node_type}'"
        return ComfyError(
            f"out of GPU memory while {doing}{_frame_size(run.graph)}; use force_offload: true or a smaller size"
        )
    during = f" during {window}" if window else ""
    if "CUDA error" in text or "device-side assert" in text:
        # The CUDA context is broken: every later job on this worker would fail the same way.
        return ComfyUnavailable(
            f"the GPU failed in node '{node_type}'{during} ({first_line}); "
            "the worker will be replaced, retry the job"
        )
    return ComfyError(f"ComfyUI failed in node '{node_type}'{during}: {exception}: {first_line}")


def _frame_size(graph: Graph) -> str:
    for node in graph.prompt.values():
        inputs = node.get("inputs") or {}
        width, height = inputs.get("width"), inputs.get("height")
        if isinstance(width, int) and isinstance(height, int):
            return f" at {width}×{height}"
    return ""


def _sampler_steps(graph: Graph, samplers: set[str]) -> int | None:
    """Steps the sampler takes per window: `steps` cut by start_step/end_step and denoising
    (video-to-video starts half-way down the schedule). None when an input is a link."""
    for node_id in samplers:
        inputs = graph.prompt[node_id].get("inputs") or {}
        steps, start, end = inputs.get("steps"), inputs.get("start_step", 0), inputs.get("end_step", -1)
        denoise = inputs.get("denoise_strength", 1.0)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (steps, start, end)):
            continue
        if not isinstance(denoise, (int, float)) or steps <= 0:
            continue
        end = steps if end == -1 else min(end, steps)
        return max(1, int(round((end - start) * min(1.0, denoise or 1.0))))
    return None


def _reported_folder(node_output: dict, frames_dir: Path) -> Path | None:
    """The frames folder the long-form output node reported, accepted only inside frames_dir."""
    root = frames_dir.resolve()
    for values in node_output.values():
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value.strip():
                path = Path(value.strip()).resolve()
                if path.is_relative_to(root) and path.is_dir():
                    return path
    return None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _checked_name(name: str, what: str) -> str:
    """A job tag or staged key used as a file name: one safe path component, or a bug."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"{what} {name!r} is not a safe file name")
    return name


def _link_or_copy(source: Path | str, target: Path | str) -> None:
    """Hard-link (instant, no extra space) where source and target share a file system."""
    target = Path(target)
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)
