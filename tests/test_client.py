"""The client, driven the way its users drive it: the command in a subprocess, the function
in-process, against real HTTP servers on 127.0.0.1.

Two servers stand in for RunPod's cloud here:
- `RunPodStandin`: RunPod's job queue with both of its faces, /v2/<endpoint>/run|status|cancel for
  the client and job-take / job-done / job-stop / ping for a worker. Either a test plays the
  worker (to reach states like TIMED_OUT or an expired job), or the real worker (`handler.py`,
  serverless mode, the ComfyUI stand-in behind it) takes the jobs and sends its real progress
  updates through the runpod SDK.
- `S3Standin`: the S3-compatible API of a network volume, backed by a folder that the worker
  sees as its volume.
The tests at the end run against the worker's own local API (`handler.py --rp_serve_api`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest

from infinitetalk_worker import client
from tests.conftest import REPO
from tests import worker_proc
from tests.mediagen import portrait, probe, speech, video

API_KEY = "rk-test-key"
ENDPOINT = "ep-standin"
VOLUME_ID = "vol-standin"


# --- RunPod's queue on loopback ----------------------------------------------------------------


@dataclasses.dataclass
class Job:
    id: str
    input: dict
    status: str = "IN_QUEUE"
    output: Any = None
    error: Any = None
    progress: Any = None
    polls: int = 0


class RunPodStandin:
    """RunPod's serverless queue: the public API a client calls and the one a worker polls."""

    def __init__(self, request_limit: int = 10_000_000):
        self.request_limit = request_limit
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self.to_stop: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self.takes = 0
        self.status_errors = 0                # answer this many /status calls with HTTP 502
        self.cond = threading.Condition()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._route(self, "GET")

            def do_POST(self) -> None:
                standin._route(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def client_env(self) -> dict[str, str]:
        return {"RUNPOD_ENDPOINT_BASE_URL": f"{self.base}/v2", "RUNPOD_ENDPOINT_ID": ENDPOINT,
                "RUNPOD_API_KEY": API_KEY}

    def worker_env(self) -> dict[str, str]:
        """What RunPod sets in a worker's container, pointed at this queue."""
        return {
            "RUNPOD_POD_ID": "standin-worker",
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.base}/job-take/$ID?gpu=standin",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.base}/job-done/$RUNPOD_POD_ID/$ID?gpu=standin",
            "RUNPOD_WEBHOOK_PING": f"{self.base}/ping/$RUNPOD_POD_ID",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # A test playing the worker uses these, as the runpod SDK would through job-take/job-done.
    def take(self, timeout: float = 30) -> Job:
        with self.cond:
            assert self.cond.wait_for(lambda: self.queue, timeout), "no job was submitted"
            job = self.jobs[self.queue.pop(0)]
            job.status = "IN_PROGRESS"
            return job

    def report(self, job: Job, progress: dict, timeout: float = 30) -> None:
        """A progress update, held until the client has polled it at least once."""
        with self.cond:
            job.progress = progress
            seen = job.polls
            assert self.cond.wait_for(lambda: job.polls > seen, timeout), "the client stopped polling"

    def finish(self, job: Job, status: str = "COMPLETED", **fields: Any) -> None:
        with self.cond:
            job.status = status
            for name, value in fields.items():
                setattr(job, name, value)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "timed out waiting on the RunPod stand-in"

    def called(self, method: str, prefix: str) -> list[str]:
        return [p for m, p in self.calls if m == method and p.startswith(prefix)]

    # --- HTTP -----------------------------------------------------------------------------------
    def _route(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(req.path).path
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        with self.cond:
            self.calls.append((method, path))
            self.cond.notify_all()
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            if req.headers.get("Authorization") != f"Bearer {API_KEY}":
                return _reply(req, 401, {"error": "Unauthorized"})
            if parts[1:2] != [ENDPOINT]:
                return _reply(req, 404, {"error": "endpoint not found"})
            action, job_id = parts[2], (parts[3] if len(parts) > 3 else None)
            if action == "run" and method == "POST":
                if length > self.request_limit:
                    return _reply(req, 413, {"error": "request body too large"})
                return _reply(req, 200, self._run(json.loads(raw)["input"]))
            if action == "status" and job_id:
                return self._status(req, job_id)
            if action == "cancel" and job_id and method == "POST":
                return self._cancel(req, job_id)
            return _reply(req, 404, {"error": "no such route"})
        if parts[0] == "job-take":
            return self._job_take(req)
        if parts[0] == "job-done":
            self._job_done(parts[2], json.loads(raw))
            return _reply(req, 200, {})
        if parts[0] == "job-stop":
            with self.cond:
                self.cond.wait_for(lambda: self.to_stop, 1.0)
                ids, self.to_stop[:] = list(self.to_stop), []
            return _reply(req, 200, {"jobsToStop": ids}) if ids else _reply(req, 204, None)
        if parts[0] == "ping":
            return _reply(req, 200, {})
        return _reply(req, 404, {"error": "no such route"})

    def _run(self, job_input: dict) -> dict:
        job = Job(f"{uuid.uuid4()}-u1", job_input)
        with self.cond:
            self.jobs[job.id] = job
            self.queue.append(job.id)
            self.cond.notify_all()
        return {"id": job.id, "status": job.status}

    def _status(self, req: BaseHTTPRequestHandler, job_id: str) -> None:
        with self.cond:
            if self.status_errors:
                self.status_errors -= 1
                return _reply(req, 502, {"error": "bad gateway"})
            job = self.jobs.get(job_id)
            if job is None:
                return _reply(req, 404, {"error": "request does not exist"})
            job.polls += 1
            self.cond.notify_all()
            answer: dict[str, Any] = {"id": job.id, "status": job.status}
            if job.status == "IN_PROGRESS" and job.progress is not None:
                answer["output"] = job.progress
            if job.status == "COMPLETED":
                answer["output"] = job.output
            if job.status == "FAILED":
                answer["error"] = job.error
        _reply(req, 200, answer)

    def _cancel(self, req: BaseHTTPRequestHandler, job_id: str) -> None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return _reply(req, 404, {"error": "request does not exist"})
            if job.status in ("IN_QUEUE", "IN_PROGRESS"):
                if job.id in self.queue:
                    self.queue.remove(job.id)
                job.status = "CANCELLED"
                self.to_stop.append(job.id)
            self.cond.notify_all()
        _reply(req, 200, {"id": job_id, "status": job.status})

    def _job_take(self, req: BaseHTTPRequestHandler) -> None:
        # RunPod holds the poll open; an immediate 204 would make the SDK spin.
        with self.cond:
            self.takes += 1
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: self.queue, 1.0):
                return _reply(req, 204, None)
            job = self.jobs[self.queue.pop(0)]
            job.status = "IN_PROGRESS"
        _reply(req, 200, {"id": job.id, "input": job.input})

    def _job_done(self, job_id: str, body: dict) -> None:
        with self.cond:
            job = self.jobs[job_id]
            if job.status != "IN_PROGRESS":
                return                      # cancelled meanwhile: RunPod drops late results
            if body.get("status") == "IN_PROGRESS":
                job.progress = body.get("output")
            elif body.get("error"):
                job.status, job.error = "FAILED", body["error"]
            else:
                job.status, job.output = "COMPLETED", body.get("output")
            self.cond.notify_all()


def _reply(req: BaseHTTPRequestHandler, code: int, body: Any, raw: bytes | None = None,
           headers: dict[str, str] | None = None) -> None:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    req.send_response(code)
    req.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
    req.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    req.end_headers()
    if req.command != "HEAD":
        try:
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass                              # the worker was stopped in the middle of a long poll


# --- A network volume's S3 API on loopback ----------------------------------------------------


class S3Standin:
    """PUT/GET/HEAD/DELETE of objects in one bucket (the volume id), stored in `root`, the
    folder the worker sees as its network volume."""

    def __init__(self, root: Path):
        self.root = root
        self.calls: list[tuple[str, str]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                standin._route(self)

            do_GET = do_HEAD = do_DELETE = do_PUT

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def client_env(self) -> dict[str, str]:
        return {"RUNPOD_VOLUME_ID": VOLUME_ID, "RUNPOD_S3_ENDPOINT_URL": self.url,
                "RUNPOD_DATACENTER": "EU-RO-1", "RUNPOD_VOLUME_MOUNT": str(self.root),
                "RUNPOD_S3_ACCESS_KEY": "user_standin", "RUNPOD_S3_SECRET_KEY": "rps_standin"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _route(self, req: BaseHTTPRequestHandler) -> None:
        bucket, _, key = urlsplit(req.path).path.lstrip("/").partition("/")
        self.calls.append((req.command, key))
        if bucket != VOLUME_ID:
            return _s3_error(req, 404, "NoSuchBucket")
        target = self.root / key
        if req.command == "PUT":
            length = int(req.headers.get("Content-Length") or 0)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(req.rfile.read(length))
            return _reply(req, 200, None, raw=b"", headers={"ETag": '"standin"'})
        if not target.is_file():
            return _s3_error(req, 404, "NoSuchKey")
        if req.command == "DELETE":
            target.unlink()
            return _reply(req, 204, None, raw=b"")
        return _reply(req, 200, None, raw=target.read_bytes(), headers={"ETag": '"standin"'})


def _s3_error(req: BaseHTTPRequestHandler, code: int, name: str) -> None:
    body = f"<?xml version='1.0'?><Error><Code>{name}</Code><Message>{name}</Message></Error>"
    _reply(req, code, None, raw=body.encode(), headers={"Content-Type": "application/xml"})


# --- Fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def runpod():
    standin = RunPodStandin()
    yield standin
    standin.close()


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    return {
        "image": portrait(tmp_path / "face.png", 320, 320),
        "audio": speech(tmp_path / "memo.wav", "Hello, this is a voice memo.", seconds=2.0),
        "mp4": video(tmp_path / "result.mp4", seconds=1, fps=25, width=128, height=128, audio=True),
    }


def run_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infinitetalk_worker.client", "--poll-interval", "0.1", *map(str, args)],
        cwd=REPO, env=_clean_env() | env, capture_output=True, text=True, timeout=120, **kw,
    )


def start_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "infinitetalk_worker.client", "--poll-interval", "0.1", *map(str, args)],
        cwd=cwd, env=_clean_env() | env | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _clean_env() -> dict[str, str]:
    drop = ("RUNPOD_", "INFINITETALK_", "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def play_worker(runpod: RunPodStandin, script: Callable[[Job], None]) -> threading.Thread:
    """Take the next job and act it out in a thread, as a worker would."""
    errors: list[BaseException] = []

    def act() -> None:
        job = runpod.take()
        try:
            script(job)
        except BaseException as exc:  # surfaced by the test through join_worker
            errors.append(exc)
            runpod.finish(job, "FAILED", error=f"the test's worker failed: {exc!r}")

    thread = threading.Thread(target=act, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_worker(thread: threading.Thread) -> None:
    thread.join(60)
    assert not thread.is_alive()
    if thread.errors:  # type: ignore[attr-defined]
        raise thread.errors[0]  # type: ignore[attr-defined]


def window_progress(windows: int) -> list[dict]:
    return [
        {"stage": "sampling", "message": f"sampling window {i} of {windows}",
         "percent": round(100 * i / (windows + 1), 1), "window": i, "windows": windows,
         "elapsed_s": 20.0 * i, "eta_s": 20.0 * (windows + 1 - i)}
        for i in range(1, windows + 1)
    ]


# --- Against the RunPod stand-in, a test playing the worker ------------------------------------


def test_portrait_and_memo_become_an_mp4_with_a_progress_bar(runpod, media, tmp_path):
    out = tmp_path / "talk.mp4"
    steps = window_progress(3)

    def worker(job: Job) -> None:
        for step in steps:
            runpod.report(job, step)
        runpod.finish(job, output={"video": base64.b64encode(media["mp4"].read_bytes()).decode(),
                                   "seed": 42, "frames": 25, "duration_s": 1.0})

    thread = play_worker(runpod, worker)
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", out,
                    "--prompt", "A calm news anchor", "--width", 320, "--height", 320],
                   runpod.client_env())
    join_worker(thread)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == media["mp4"].read_bytes()
    assert "seed 42" in done.stdout

    bars = [line for line in done.stderr.splitlines() if "window" in line]
    assert [re.search(r"window (\d)/3", b).group(1) for b in bars] == ["1", "2", "3"]
    percents = [int(re.search(r"\]\s+(\d+)%", b).group(1)) for b in bars]
    assert percents == sorted(percents) and percents[0] < percents[-1]
    assert "1:00 elapsed" in bars[-1] and "0:20 left" in bars[-1]

    sent = next(iter(runpod.jobs.values())).input
    assert base64.b64decode(sent["image_base64"]) == media["image"].read_bytes()
    assert base64.b64decode(sent["wav_base64"]) == media["audio"].read_bytes()
    assert sent["prompt"] == "A calm news anchor" and sent["width"] == 320


def test_the_function_reports_updates_and_returns_the_metadata(runpod, media, tmp_path, monkeypatch):
    for name, value in runpod.client_env().items():
        monkeypatch.setenv(name, value)
    steps = window_progress(2)

    def worker(job: Job) -> None:
        for step in steps:
            runpod.report(job, step)
        runpod.finish(job, output={"video": base64.b64encode(media["mp4"].read_bytes()).decode(),
                                   "seed": 7, "warnings": ["image: resized to 320x320"]})

    thread = play_worker(runpod, worker)
    updates: list[client.Update] = []
    result = client.generate(tmp_path / "talk.mp4", image=media["image"], audio=media["audio"],
                             on_progress=updates.append, poll_interval_s=0.05, seed=7)
    join_worker(thread)
    assert result.path.read_bytes() == media["mp4"].read_bytes()
    assert result.metadata["seed"] == 7 and result.warnings == ["image: resized to 320x320"]
    assert [u.progress for u in updates if u.progress] [-1] == steps[-1]
    assert {u.progress.get("window") for u in updates if u.progress} == {1, 2}


@pytest.mark.parametrize(
    "status, fields, sentence",
    [
        ("FAILED", {"error": "width: 4096 is above the maximum 1280"},
         "failed: width: 4096 is above the maximum 1280"),
        # A handler that raised: runpod sends a JSON record; the user reads only its message.
        ("FAILED", {"error": json.dumps({"error_type": "<class 'RuntimeError'>",
                                         "error_message": "ComfyUI is not answering",
                                         "error_traceback": "Traceback (most recent call last):"})},
         "failed: ComfyUI is not answering"),
        ("TIMED_OUT", {}, "execution timeout"),
        ("CANCELLED", {}, "was cancelled on the endpoint"),
    ],
)
def test_a_job_that_ends_without_a_video_says_why(runpod, media, tmp_path, status, fields, sentence):
    thread = play_worker(runpod, lambda job: runpod.finish(job, status, **fields))
    out = tmp_path / "talk.mp4"
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", out], runpod.client_env())
    join_worker(thread)
    assert done.returncode == 1
    assert sentence in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_an_expired_job_is_explained(runpod, media, tmp_path):
    def worker(job: Job) -> None:
        runpod.report(job, window_progress(1)[0])
        with runpod.cond:
            del runpod.jobs[job.id]          # RunPod forgets /run results 30 minutes after the end

    thread = play_worker(runpod, worker)
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4"],
                   runpod.client_env())
    join_worker(thread)
    assert done.returncode == 1
    assert "is unknown to the endpoint" in done.stderr and "expire 30 minutes" in done.stderr


def test_a_passing_gateway_error_while_polling_loses_nothing(runpod, media, tmp_path):
    def worker(job: Job) -> None:
        runpod.report(job, window_progress(2)[0])
        with runpod.cond:
            runpod.status_errors = 2
        runpod.report(job, window_progress(2)[1])
        runpod.finish(job, output={"video": base64.b64encode(media["mp4"].read_bytes()).decode()})

    thread = play_worker(runpod, worker)
    out = tmp_path / "talk.mp4"
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", out], runpod.client_env())
    join_worker(thread)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == media["mp4"].read_bytes()
    assert len(runpod.called("POST", f"/v2/{ENDPOINT}/run")) == 1


def test_ctrl_c_cancels_the_job_on_the_endpoint(runpod, media, tmp_path):
    thread = play_worker(runpod, lambda job: runpod.report(job, window_progress(4)[0]))
    proc = start_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4"],
                     runpod.client_env(), tmp_path)
    join_worker(thread)                       # the client has seen window 1 of 4
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    job = next(iter(runpod.jobs.values()))
    assert proc.returncode == 130
    assert runpod.called("POST", f"/v2/{ENDPOINT}/cancel/{job.id}")
    assert job.status == "CANCELLED"
    assert f"cancelled job {job.id} on the endpoint" in err


def test_a_file_too_big_for_inline_is_refused_with_what_to_configure(runpod, tmp_path):
    image = portrait(tmp_path / "face.png", 320, 320)
    audio = speech(tmp_path / "memo.wav", "A voice memo that is a little longer than the limit.")
    done = run_cli(["--image", image, "--audio", audio, "-o", tmp_path / "t.mp4",
                    "--inline-limit-mb", "0.05"], runpod.client_env())
    assert done.returncode == 1
    assert "above the 0.05 MB limit of /run" in done.stderr
    assert "RUNPOD_VOLUME_ID" in done.stderr and "RUNPOD_S3_ACCESS_KEY" in done.stderr
    assert not runpod.called("POST", f"/v2/{ENDPOINT}/run")


def test_a_file_too_big_for_inline_goes_through_the_volume(runpod, tmp_path):
    image = portrait(tmp_path / "face.jpg", 320, 320)
    audio = speech(tmp_path / "memo.wav", "A voice memo, longer than the portrait is big.", seconds=8.0)
    mp4 = video(tmp_path / "result.mp4", seconds=1, fps=25, width=128, height=128, audio=True)
    volume = tmp_path / "volume"
    volume.mkdir()
    s3 = S3Standin(volume)
    seen: dict[str, bytes] = {}

    def worker(job: Job) -> None:
        # The worker reads the upload from its volume while the job runs.
        seen["audio"] = Path(job.input["wav_path"]).read_bytes()
        runpod.finish(job, output={"video": base64.b64encode(mp4.read_bytes()).decode()})

    thread = play_worker(runpod, worker)
    limit = (image.stat().st_size * 4 / 3 + 4000) / 1e6   # the portrait fits inline, the memo not
    assert audio.stat().st_size > image.stat().st_size
    done = run_cli(["--image", image, "--audio", audio, "-o", tmp_path / "t.mp4",
                    "--inline-limit-mb", f"{limit:.3f}"], runpod.client_env() | s3.client_env())
    join_worker(thread)
    s3.close()
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t.mp4").read_bytes() == mp4.read_bytes()
    sent = next(iter(runpod.jobs.values())).input
    assert "wav_base64" not in sent and "image_base64" in sent
    assert sent["wav_path"].startswith(f"{volume}/infinitetalk-inputs/")
    assert seen["audio"] == audio.read_bytes()
    assert not list(volume.rglob("*.wav")), "the upload is removed once the job has ended"


@pytest.mark.parametrize("where", ["video_path", "video_url"])
def test_the_video_is_fetched_from_the_volume_or_a_link(runpod, media, tmp_path, where):
    volume = tmp_path / "volume"
    (volume / "results").mkdir(parents=True)
    stored = volume / "results" / "talk-abc.mp4"
    stored.write_bytes(media["mp4"].read_bytes())
    s3 = S3Standin(volume)
    result = {"video_path": str(stored),
              "video_url": f"{s3.url}/{VOLUME_ID}/results/talk-abc.mp4"}[where]
    thread = play_worker(runpod, lambda job: runpod.finish(job, output={where: result}))
    out = tmp_path / "out" / "talk.mp4"
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", out, "--network-volume"],
                   runpod.client_env() | s3.client_env())
    join_worker(thread)
    s3.close()
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == media["mp4"].read_bytes()
    assert next(iter(runpod.jobs.values())).input["network_volume"] is True


def test_a_volume_result_without_volume_access_names_the_path(runpod, media, tmp_path):
    thread = play_worker(runpod, lambda job: runpod.finish(
        job, output={"video_path": "/runpod-volume/talk-abc.mp4"}))
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4"],
                   runpod.client_env())
    join_worker(thread)
    assert done.returncode == 1
    assert "/runpod-volume/talk-abc.mp4" in done.stderr and "RUNPOD_VOLUME_ID" in done.stderr


def test_input_the_schema_rejects_is_never_sent(runpod, media, tmp_path):
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4",
                    "--param", "input_type=\"sideways\""], runpod.client_env())
    assert done.returncode == 1
    assert done.stderr.startswith("error: input_type:")
    assert not runpod.called("POST", f"/v2/{ENDPOINT}/run")


def test_a_wrong_api_key_is_named(runpod, media, tmp_path):
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4"],
                   runpod.client_env() | {"RUNPOD_API_KEY": "wrong"})
    assert done.returncode == 1 and "RUNPOD_API_KEY" in done.stderr


def test_batch_makes_one_video_per_audio_file(runpod, media, tmp_path):
    memos = tmp_path / "memos"
    memos.mkdir()
    for name, text in [("a.wav", "First memo."), ("b.mp3", "Second memo."), ("c.m4a", "Third memo.")]:
        speech(memos / name, text)
    (memos / "notes.txt").write_text("not audio")

    def worker(job: Job) -> None:
        runpod.finish(job, output={"video": base64.b64encode(media["mp4"].read_bytes()).decode()})
        for _ in range(2):
            worker_job = runpod.take()
            runpod.finish(worker_job, output={"video": base64.b64encode(media["mp4"].read_bytes()).decode()})

    thread = play_worker(runpod, worker)
    out = tmp_path / "videos"
    done = run_cli(["--image", media["image"], "--audio-dir", memos, "--out-dir", out], runpod.client_env())
    join_worker(thread)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]
    assert sorted(Path(line).name for line in done.stdout.split()) == ["a.mp4", "b.mp4", "c.mp4"]
    sent = sorted(base64.b64decode(j.input["wav_base64"]) for j in runpod.jobs.values())
    assert sent == sorted((memos / n).read_bytes() for n in ("a.wav", "b.mp3", "c.m4a"))


def test_batch_goes_on_past_a_failed_job_and_names_it(runpod, media, tmp_path):
    memos = tmp_path / "memos"
    memos.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        speech(memos / name, f"Memo {name}.")
    video_b64 = base64.b64encode(media["mp4"].read_bytes()).decode()

    def worker(job: Job) -> None:
        runpod.finish(job, output={"video": video_b64})
        runpod.finish(runpod.take(), "FAILED", error="wav_base64: the audio is silent")
        runpod.finish(runpod.take(), output={"video": video_b64})

    thread = play_worker(runpod, worker)
    out = tmp_path / "videos"
    done = run_cli(["--image", media["image"], "--audio-dir", memos, "--out-dir", out], runpod.client_env())
    join_worker(thread)
    assert done.returncode == 1
    assert "1 of 3 jobs failed" in done.stderr and "wav_base64: the audio is silent" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mp4"]
    assert sorted(Path(line).name for line in done.stdout.split()) == ["a.mp4", "c.mp4"]


# --- Against the real worker: its local API, and RunPod's queue with handler.py behind it -----


@pytest.fixture
def worker_setup(comfy_standin, tmp_path):
    """The ComfyUI stand-in and the settings of a worker in front of it; the volume is tmp."""
    volume = tmp_path / "volume"
    volume.mkdir()
    standin = comfy_standin(behaviour={"step_delay_s": 0.05})
    return standin, standin.settings(volume_dir=volume, output_dir=volume)


@pytest.fixture
def local_api(worker_setup):
    """The worker's local API (the runpod SDK's development server), on an ephemeral port."""
    standin, settings = worker_setup
    with worker_proc.local_api(worker_proc.worker_env(settings.to_env())) as (base, _):
        yield {"INFINITETALK_API_URL": base}, standin, settings


@pytest.fixture
def worker_on_runpod(worker_setup, runpod):
    """handler.py as a serverless worker taking jobs from the RunPod stand-in."""
    standin, settings = worker_setup
    worker = worker_proc.WorkerProcess([], worker_proc.worker_env(settings.to_env(), **runpod.worker_env()))
    runpod.wait_for(lambda: runpod.takes > 0)
    yield standin, settings
    worker.stop()


def _audio_seconds(path: Path) -> float:
    return probe(path)["duration_s"]


def test_local_api_turns_a_portrait_and_a_memo_into_an_mp4(local_api, media, tmp_path):
    env, _, _ = local_api
    out = tmp_path / "talk.mp4"
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", out,
                    "--width", 256, "--height", 256, "--seed", 5], env)
    assert done.returncode == 0, done.stderr
    info = probe(out)
    assert (info["video"]["width"], info["video"]["height"]) == (256, 256)
    assert info["audio"] is not None
    assert abs(info["duration_s"] - _audio_seconds(media["audio"])) < 0.2
    assert "seed 5" in done.stdout
    assert "running, no progress reported yet" in done.stderr


def test_local_api_big_files_and_the_result_travel_through_the_volume(local_api, tmp_path):
    env, _, settings = local_api
    s3 = S3Standin(settings.volume_dir)
    image = portrait(tmp_path / "face.jpg", 320, 320)
    audio = speech(tmp_path / "memo.wav", "A memo too big to send inline.", seconds=3.0)
    out = tmp_path / "talk.mp4"
    done = run_cli(["--image", image, "--audio", audio, "-o", out, "--width", 256, "--height", 256,
                    "--inline-limit-mb", "0.01", "--network-volume"], env | s3.client_env())
    s3.close()
    assert done.returncode == 0, done.stderr
    assert abs(probe(out)["duration_s"] - _audio_seconds(audio)) < 0.2
    puts = [key for method, key in s3.calls if method == "PUT"]
    assert sorted(Path(k).name for k in puts) == ["face.jpg", "memo.wav"]
    gets = [key for method, key in s3.calls if method == "GET"]
    assert len(gets) == 1 and (settings.volume_dir / gets[0]).read_bytes() == out.read_bytes()
    assert not list(settings.volume_dir.rglob("memo.wav")), "uploads are removed after the job"


def test_local_api_failure_prints_the_workers_sentence(local_api, media, tmp_path):
    env, standin, _ = local_api
    outside = "/runpod-volume/../etc/passwd"
    done = run_cli(["--image", outside, "--audio", media["audio"], "-o", tmp_path / "t.mp4"], env)
    assert done.returncode == 1
    assert re.search(r"error: job test-[\w-]+ failed: image_path: ", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not any(r["path"] == "/prompt" for r in standin.requests())

    standin.set_behaviour({"fail": "exec_error", "at_window": 1})
    done = run_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4",
                    "--width", 256, "--height", 256], env)
    assert done.returncode == 1
    assert re.search(r"error: job test-[\w-]+ failed: .*WanVideoSampler", done.stderr), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "t.mp4").exists()


def test_local_api_batch_over_three_memos(local_api, media, tmp_path):
    env, _, _ = local_api
    memos = tmp_path / "memos"
    memos.mkdir()
    seconds = {"one.wav": 1.0, "two.mp3": 1.6, "three.m4a": 2.2}
    for name, length in seconds.items():
        speech(memos / name, "A memo for the batch.", seconds=length)
    out = tmp_path / "videos"
    done = run_cli(["--image", media["image"], "--audio-dir", memos, "--out-dir", out,
                    "--width", 256, "--height", 256], env)
    assert done.returncode == 0, done.stderr
    for name, length in seconds.items():
        assert abs(probe(out / f"{Path(name).stem}.mp4")["duration_s"] - length) < 0.2


def test_local_api_ctrl_c_says_the_job_cannot_be_cancelled_there(local_api, media, tmp_path):
    env, standin, _ = local_api
    standin.set_behaviour({"fail": "hang", "at_window": 1})
    proc = start_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4",
                      "--width", 256, "--height", 256], env, tmp_path)
    deadline = time.monotonic() + 60
    while not any(r["path"] == "/prompt" and r["method"] == "POST" for r in standin.requests()):
        assert time.monotonic() < deadline and proc.poll() is None, "the job never reached ComfyUI"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "has no /cancel" in err and "stop the worker process" in err


def test_progress_of_the_real_worker_reaches_the_bar(worker_on_runpod, runpod, media, tmp_path):
    audio = speech(tmp_path / "long.wav", "A memo long enough for two windows of video.", seconds=4.5)
    out = tmp_path / "talk.mp4"
    done = run_cli(["--image", media["image"], "--audio", audio, "-o", out, "--width", 256, "--height", 256],
                   runpod.client_env())
    assert done.returncode == 0, done.stderr
    assert abs(probe(out)["duration_s"] - _audio_seconds(audio)) < 0.2
    windows = {m.groups() for m in re.finditer(r"window (\d+)/(\d+)", done.stderr)}
    assert ("1", "2") in windows and ("2", "2") in windows, done.stderr
    assert re.search(r"\d+:\d\d elapsed · \d+:\d\d left", done.stderr), done.stderr


def test_ctrl_c_stops_the_real_worker(worker_on_runpod, runpod, media, tmp_path):
    standin, settings = worker_on_runpod
    standin.set_behaviour({"fail": "hang", "at_window": 1})
    proc = start_cli(["--image", media["image"], "--audio", media["audio"], "-o", tmp_path / "t.mp4",
                      "--width", 256, "--height", 256], runpod.client_env(), tmp_path)
    deadline = time.monotonic() + 60
    while not any(r["path"] == "/prompt" and r["method"] == "POST" for r in standin.requests()):
        assert time.monotonic() < deadline and proc.poll() is None, "the job never reached ComfyUI"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "cancelled job" in err
    while not any(r["path"] == "/interrupt" for r in standin.requests()):
        assert time.monotonic() < deadline, "the cancel never reached ComfyUI"
        time.sleep(0.2)
    assert next(iter(runpod.jobs.values())).status == "CANCELLED"
