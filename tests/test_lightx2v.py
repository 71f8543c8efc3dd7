"""The LightX2V-compatible task service (API.md §5), driven over HTTP with a real client.

Two rigs:
- `service_with(...)`: the real app, store and queue in this process, with a scripted task
  runner in place of the pipeline (it makes a real MP4 with ffmpeg, or holds until released or
  cancelled), for queue, cancel, restart and expiry rules that need a task to stay running on cue.
- `lightx2v_service`: `python -m infinitetalk_worker.lightx2v` as its own process, running the real
  pipeline against the ComfyUI stand-in: the service a user starts.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import requests
import uvicorn
from PIL import Image

from infinitetalk_worker.errors import JobCancelled
from infinitetalk_worker.lightx2v.app import create_app
from infinitetalk_worker.lightx2v.store import Task
from infinitetalk_worker.settings import Settings
from tests import mediagen

REPO = Path(__file__).resolve().parent.parent
POLL_LIMIT_S = 120.0


# --- helpers -------------------------------------------------------------------------------------


def wait_for(check, what: str, limit_s: float = POLL_LIMIT_S):
    """Poll until check() returns something truthy; fail (not time) the test if it never does."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def status_of(base: str, task_id: str) -> dict:
    r = requests.get(f"{base}/v1/tasks/{task_id}/status", timeout=10)
    r.raise_for_status()
    return r.json()


def wait_status(base: str, task_id: str, *wanted: str) -> dict:
    return wait_for(
        lambda: (s := status_of(base, task_id))["status"] in wanted and s, f"task {task_id} to be {wanted}"
    )


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ScriptedRuns:
    """Stands in for the pipeline: records each task it gets, and on `release()` writes a real
    MP4 where the result belongs; a cancel while it is held ends it like ComfyUI's interrupt."""

    def __init__(self, tmp: Path):
        self.clip = mediagen.video(tmp / "made.mp4", seconds=1, fps=25, width=64, height=64, audio=True)
        self.started: list[str] = []
        self.interrupted: list[str] = []
        self._release = threading.Event()

    def release(self) -> None:
        self._release.set()

    def __call__(self, task: Task, result_path: Path, cancel: threading.Event, on_progress) -> dict:
        self.started.append(task.task_id)
        on_progress({"stage": "sampling", "message": "window 1 of 1", "percent": 10.0})
        while not self._release.is_set():
            if cancel.wait(0.05):
                self.interrupted.append(task.task_id)
                raise JobCancelled("ComfyUI run interrupted")
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_bytes(self.clip.read_bytes())
        return {"seed": task.job_input["seed"]}


@contextmanager
def service_with(settings: Settings, runs) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(create_app(settings, runs), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the service to start", 30)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        lightx2v_cache_dir=tmp_path / "lightx2v",
        work_dir=tmp_path / "work",
        volume_dir=tmp_path / "volume",
        lightx2v_max_queue_size=2,
    )


def create(base: str, **fields) -> requests.Response:
    return requests.post(f"{base}/v1/tasks/video", json=fields, timeout=30)


# --- queue, cancel, restart, expiry (scripted runner) -------------------------------------------


def test_full_queue_answers_503_and_cancel_frees_it(tmp_path, settings):
    runs = ScriptedRuns(tmp_path)
    with service_with(settings, runs) as base:
        first = create(base, prompt="one").json()["task_id"]
        running = wait_for(lambda: status_of(base, first).get("progress"), "progress of the running task")
        assert running["percent"] == 10.0 and running["stage"] == "sampling"
        second = create(base, prompt="two").json()["task_id"]

        full = create(base, prompt="three")
        assert full.status_code == 503
        assert "queue is full" in full.json()["detail"]
        queue = requests.get(f"{base}/v1/tasks/queue/status", timeout=10).json()
        assert queue == {
            "is_processing": True,
            "current_task": first,
            "pending_count": 1,
            "active_count": 2,
            "queue_size": 2,
            "queue_available": 0,
        }

        stop = requests.delete(f"{base}/v1/tasks/{second}", timeout=60).json()
        assert stop == {"stop_status": "success", "reason": "Task stopped successfully."}
        assert status_of(base, second)["status"] == "cancelled"

        stop = requests.delete(f"{base}/v1/tasks/{first}", timeout=60).json()
        assert stop["stop_status"] == "success"
        assert runs.interrupted == [first]
        cancelled = status_of(base, first)
        assert cancelled["status"] == "cancelled" and cancelled["end_time"]
        assert requests.get(f"{base}/v1/tasks/{first}/result", timeout=10).status_code == 404

        again = requests.delete(f"{base}/v1/tasks/{first}", timeout=10).json()
        assert again["stop_status"] == "do_nothing"
        assert create(base, prompt="room again").status_code == 200
        assert runs.started[:1] == [first] and second not in runs.started


def test_tasks_and_results_survive_a_restart(tmp_path, settings):
    runs = ScriptedRuns(tmp_path)
    runs.release()
    with service_with(settings, runs) as base:
        done = create(base, prompt="before the restart", seed=7).json()
        wait_status(base, done["task_id"], "completed")

    held = ScriptedRuns(tmp_path)
    with service_with(settings, held) as base:
        status = status_of(base, done["task_id"])
        assert status["status"] == "completed" and status["metadata"]["seed"] == 7
        video = requests.get(f"{base}/v1/tasks/{done['task_id']}/result", timeout=30)
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        out = tmp_path / "after_restart.mp4"
        out.write_bytes(video.content)
        assert mediagen.probe(out)["duration_s"] > 0.5
        # A task interrupted by the shutdown goes back to the queue ...
        interrupted = create(base, prompt="cut short by the restart").json()["task_id"]
        wait_status(base, interrupted, "processing")
        waiting = create(base, prompt="waits its turn").json()["task_id"]

    runs = ScriptedRuns(tmp_path)
    runs.release()
    with service_with(settings, runs) as base:
        # ... and runs again after it, before the task queued behind it.
        wait_status(base, waiting, "completed")
        assert status_of(base, interrupted)["status"] == "completed"
        assert runs.started == [interrupted, waiting]
        service = requests.get(f"{base}/v1/service/status", timeout=10).json()
        assert service["completed_tasks"] == 3 and service["service_status"] == "idle"


def test_results_expire_after_their_lifetime(tmp_path, settings):
    runs = ScriptedRuns(tmp_path)
    runs.release()
    with service_with(settings.replace(lightx2v_result_ttl_h=1 / 3600), runs) as base:
        task = create(base, prompt="short-lived").json()
        wait_status(base, task["task_id"], "completed")
        result = settings.lightx2v_cache_dir / "outputs" / task["save_result_path"]
        assert result.is_file()
        wait_for(
            lambda: requests.get(f"{base}/v1/tasks/{task['task_id']}/status", timeout=10).status_code == 404,
            "the task to expire",
        )
        assert not result.exists()


def test_downloads_stay_inside_the_results_folder(tmp_path, settings):
    runs = ScriptedRuns(tmp_path)
    runs.release()
    secret = settings.lightx2v_cache_dir / "tasks.sqlite3"
    with service_with(settings, runs) as base:
        task = create(base, prompt="x", save_result_path="talks/first").json()
        assert task["save_result_path"] == "talks/first.mp4"
        wait_status(base, task["task_id"], "completed")
        ok = requests.get(f"{base}/v1/files/download/talks/first.mp4", timeout=10)
        assert ok.status_code == 200 and len(ok.content) == runs.clip.stat().st_size

        for path in ("..%2Ftasks.sqlite3", "%2E%2E/%2E%2E/lightx2v/tasks.sqlite3", f"{secret}"):
            r = requests.get(f"{base}/v1/files/download/{path}", timeout=10)
            assert r.status_code == 403, path
        (settings.lightx2v_cache_dir / "outputs" / "link.mp4").symlink_to(secret)
        assert requests.get(f"{base}/v1/files/download/link.mp4", timeout=10).status_code == 403
        assert requests.get(f"{base}/v1/files/download/nothing.mp4", timeout=10).status_code == 404

        # Reusing a finished task's result path replaces its result, as LightX2V overwrites it.
        again = create(base, prompt="y", save_result_path="talks/first.mp4")
        assert again.status_code == 200
        assert requests.get(f"{base}/v1/tasks/{task['task_id']}/status", timeout=10).status_code == 404
        wait_status(base, again.json()["task_id"], "completed")


def test_bad_requests_get_4xx_with_the_field_named(tmp_path, settings):
    runs = ScriptedRuns(tmp_path)
    with service_with(settings.replace(lightx2v_max_upload_mb=1), runs) as base:
        cases = [
            ({"infer_steps": 500}, 400, "infer_steps: 500 is above the maximum 50"),
            ({"target_shape": [4096, 512]}, 400, "target_shape: 4096 is above the maximum 1280"),
            ({"target_shape": [512]}, 400, "target_shape: must be [height, width]"),
            ({"image_path": "ftp://example.com/a.png"}, 400, "image_path: only http and https URLs"),
            ({"seed": "abc"}, 422, "seed: "),
            ({"colour": "red"}, 422, "colour: unknown field"),
            ({"talk_objects": [{"mask": ""}]}, 422, "talk_objects[0].audio: Field required"),
            ({"task_id": "../escape"}, 400, "task_id: "),
            ({"save_result_path": "../../etc/x"}, 400, "save_result_path: "),
            ({"save_result_path": "/etc/x.mp4"}, 400, "save_result_path: must be inside the results folder"),
        ]
        for body, code, detail in cases:
            r = create(base, **body)
            assert r.status_code == code, (body, r.text)
            assert detail in r.json()["detail"], (body, r.text)

        too_big = requests.post(
            f"{base}/v1/tasks/video", json={"prompt": "x", "image_path": "A" * (2 * 1024 * 1024)}, timeout=30
        )
        assert too_big.status_code == 413 and "LIGHTX2V_MAX_UPLOAD_MB" in too_big.json()["detail"]
        head = b'--zz\r\nContent-Disposition: form-data; name="image_file"; filename="a.png"\r\n\r\n'
        chunked = requests.post(  # no Content-Length: the cap is counted as the body arrives
            f"{base}/v1/tasks/video/form",
            data=iter([head] + [b"x" * 65536] * 40),
            headers={"content-type": "multipart/form-data; boundary=zz"},
            timeout=30,
        )
        assert chunked.status_code == 413

        taken = create(base, prompt="a", task_id="mine")
        assert taken.status_code == 200
        assert create(base, prompt="b", task_id="mine").status_code == 409
        held = create(base, prompt="c", save_result_path="mine.mp4")
        assert held.status_code == 409 and "has not finished" in held.json()["detail"]
        assert requests.get(f"{base}/v1/tasks/nope/status", timeout=10).status_code == 404
        assert requests.get(f"{base}/v1/tasks/nope/result", timeout=10).status_code == 404
        assert requests.get(f"{base}/v1/tasks/mine/result", timeout=10).status_code == 404
        assert runs.started == ["mine"]
        leftovers = list((settings.lightx2v_cache_dir / "inputs").iterdir())
        assert leftovers == []


# --- the translation of two-speaker masks -------------------------------------------------------


def test_masks_become_speaker_boxes(tmp_path):
    from infinitetalk_worker.lightx2v.schema import VideoTaskRequest
    from infinitetalk_worker.lightx2v.translate import to_job_input

    volume = tmp_path / "volume"
    volume.mkdir()
    right = np.zeros((200, 400), np.uint8)
    right[20:120, 250:350] = 255  # speaker 1 on the right
    Image.fromarray(right).save(volume / "right.png")
    left = np.zeros((200, 400), np.uint8)
    left[50:150, 40:160] = 255
    buf = tmp_path / "left.png"
    Image.fromarray(left).save(buf)
    message = VideoTaskRequest(
        talk_objects=[
            {"audio": "/runpod-volume/a.wav", "mask": str(volume / "right.png")},
            {"audio": "/runpod-volume/b.wav", "mask": "data:image/png;base64," + b64(buf)},
        ]
    )
    job = to_job_input(message, Settings(volume_dir=volume))
    assert job["person_count"] == "multi"
    assert job["speaker_boxes"] == [[0.625, 0.1, 0.875, 0.6], [0.1, 0.25, 0.4, 0.75]]

    outside = VideoTaskRequest(
        talk_objects=[{"audio": "a.wav", "mask": "/etc/hostname"}, {"audio": "b.wav", "mask": str(volume / "right.png")}]
    )
    with pytest.raises(Exception, match=r"talk_objects\[0\]\.mask: no such file inside"):
        to_job_input(outside, Settings(volume_dir=volume))


# --- the service as users start it, running the real pipeline against the ComfyUI stand-in --------


class Service:
    def __init__(self, standin, settings: Settings):
        self.standin = standin
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.log: list[str] = []

    def start(self) -> "Service":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "LIGHTX2V_"))}
        env.update(self.settings.to_env())
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infinitetalk_worker.lightx2v", "--host", "127.0.0.1", "--port", "0"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for line in self.proc.stdout:
            self.log.append(line)
            if line.startswith("READY "):
                self.base = f"http://127.0.0.1:{int(line.split()[1])}"
                break
        else:
            pytest.fail("the service did not start:\n" + "".join(self.log[-40:]))
        # Keep reading its log, so a full pipe never blocks it.
        threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def lightx2v_service(comfy_standin, tmp_path):
    services: list[Service] = []

    def start(behaviour: dict | None = None, **overrides) -> Service:
        standin = comfy_standin(behaviour=behaviour or {})
        settings = standin.settings(
            volume_dir=tmp_path / "volume",
            work_dir=tmp_path / "work",
            lightx2v_cache_dir=tmp_path / "lightx2v",
            **overrides,
        )
        service = Service(standin, settings).start()
        services.append(service)
        return service

    yield start
    for service in services:
        service.stop()


@pytest.fixture
def media(tmp_path) -> dict:
    volume = tmp_path / "volume"
    return {
        "portrait": mediagen.portrait(volume / "portrait.jpg", 320, 400),
        "clip": mediagen.video(volume / "clip.mp4", seconds=1.6, fps=25, width=320, height=240),
        "one": mediagen.speech(volume / "one.wav", "Hello, I am the first speaker.", seconds=1.6),
        "two": mediagen.speech(volume / "two.mp3", "And I am the second.", seconds=1.2),
    }


def download_video(base: str, task_id: str, dest: Path) -> dict:
    r = requests.get(f"{base}/v1/tasks/{task_id}/result", timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", r.text[:300]
    dest.write_bytes(r.content)
    return mediagen.probe(dest)


def _prompts(standin) -> int:
    return sum(1 for r in standin.requests() if r["method"] == "POST" and r["path"] == "/prompt")


def test_json_tasks_with_an_image_or_a_video_condition(lightx2v_service, media, tmp_path):
    service = lightx2v_service()
    base = service.base
    image_task = requests.post(
        f"{base}/v1/tasks/video/",
        json={
            "prompt": "A man talks to the camera",
            "image_path": "data:image/jpeg;base64," + b64(media["portrait"]),
            "audio_path": str(media["one"]),
            "target_shape": [256, 320],
            "infer_steps": 4,
            "seed": 11,
        },
        timeout=30,
    )
    assert image_task.status_code == 200, image_task.text
    created = image_task.json()
    assert created["task_status"] == "pending" and created["save_result_path"] == f"{created['task_id']}.mp4"
    video_task = requests.post(
        f"{base}/v1/tasks/video",
        json={"image_path": str(media["clip"]), "audio_path": b64(media["two"]), "target_shape": [256, 320],
              "save_result_path": "dubbed/clip"},
        timeout=30,
    )
    assert video_task.status_code == 200, video_task.text
    video_task = video_task.json()

    done = wait_status(base, created["task_id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["metadata"]["workflow"] == "I2V_single" and done["metadata"]["seed"] == 11
    info = download_video(base, created["task_id"], tmp_path / "i2v.mp4")
    assert (info["video"]["width"], info["video"]["height"]) == (320, 256)
    assert info["audio"] is not None and info["duration_s"] >= 1.5

    dubbed = wait_status(base, video_task["task_id"], "completed", "failed")
    assert dubbed["status"] == "completed", dubbed["error"]
    assert dubbed["metadata"]["workflow"] == "V2V_single"
    file = requests.get(f"{base}/v1/files/download/dubbed/clip.mp4", timeout=60)
    assert file.status_code == 200
    (tmp_path / "v2v.mp4").write_bytes(file.content)
    assert mediagen.probe(tmp_path / "v2v.mp4")["video"]["width"] == 320

    service_status = requests.get(f"{base}/v1/service/status", timeout=10).json()
    assert service_status["completed_tasks"] == 2 and service_status["service_status"] == "idle"
    meta = requests.get(f"{base}/v1/service/metadata", timeout=10).json()
    assert meta["model_cls"] == "infinitetalk" and "V2V_multi" in meta["workflows"]


def test_multipart_upload_and_two_speakers(lightx2v_service, media, tmp_path):
    service = lightx2v_service()
    base = service.base
    with media["portrait"].open("rb") as image, media["one"].open("rb") as audio:
        form = requests.post(
            f"{base}/v1/tasks/video/form",
            files={"image_file": ("face.jpg", image, "image/jpeg"), "audio_file": ("speech.wav", audio, "audio/wav")},
            data={"prompt": "A person talking", "target_shape": "[256, 256]", "infer_steps": "4"},
            timeout=60,
        )
    assert form.status_code == 200, form.text
    form_task = form.json()["task_id"]

    mask = np.zeros((400, 320), np.uint8)
    mask[:, 160:] = 255
    Image.fromarray(mask).save(tmp_path / "volume" / "right.png")
    mask[:] = 0
    mask[:, :160] = 255
    Image.fromarray(mask).save(tmp_path / "volume" / "left.png")
    two = requests.post(
        f"{base}/v1/tasks/video",
        json={
            "prompt": "Two people talk",
            "image_path": str(media["portrait"]),
            "talk_objects": [
                {"audio": str(media["one"]), "mask": str(tmp_path / "volume" / "right.png")},
                {"audio": "data:audio/mpeg;base64," + b64(media["two"]), "mask": str(tmp_path / "volume" / "left.png")},
            ],
            "target_shape": [256, 256],
        },
        timeout=30,
    )
    assert two.status_code == 200, two.text

    uploaded = wait_status(base, form_task, "completed", "failed")
    assert uploaded["status"] == "completed", uploaded["error"]
    info = download_video(base, form_task, tmp_path / "form.mp4")
    assert (info["video"]["width"], info["video"]["height"]) == (256, 256) and info["audio"] is not None
    assert not (service.settings.lightx2v_cache_dir / "inputs" / form_task).exists(), "uploads go with the task"

    multi = wait_status(base, two.json()["task_id"], "completed", "failed")
    assert multi["status"] == "completed", multi["error"]
    assert multi["metadata"]["workflow"] == "I2V_multi"
    info = download_video(base, two.json()["task_id"], tmp_path / "two.mp4")
    assert info["duration_s"] > 1.4, "as long as the longer speaker (1.6 s, not 1.2 s)"


def test_queue_limit_and_cancelling_pending_and_running_tasks(lightx2v_service, media):
    service = lightx2v_service({"fail": "hang", "at_window": 1}, lightx2v_max_queue_size=2)
    base, standin = service.base, service.standin
    job = {"image_path": str(media["portrait"]), "audio_path": str(media["one"]), "target_shape": [256, 256]}
    running = requests.post(f"{base}/v1/tasks/video", json=job, timeout=30).json()["task_id"]
    waiting = requests.post(f"{base}/v1/tasks/video", json=job, timeout=30).json()["task_id"]
    full = requests.post(f"{base}/v1/tasks/video", json=job, timeout=30)
    assert full.status_code == 503, full.text

    wait_status(base, running, "processing")
    wait_for(lambda: _prompts(standin) == 1, "the running task to reach ComfyUI")
    assert requests.delete(f"{base}/v1/tasks/{waiting}", timeout=30).json()["stop_status"] == "success"
    assert status_of(base, waiting)["status"] == "cancelled"

    stop = requests.delete(f"{base}/v1/tasks/{running}", timeout=90).json()
    assert stop == {"stop_status": "success", "reason": "Task stopped successfully."}
    assert any(r["path"] == "/interrupt" for r in standin.requests()), "cancel must interrupt ComfyUI"
    cancelled = status_of(base, running)
    assert cancelled["status"] == "cancelled" and cancelled["error"] == "Task cancelled by user"
    assert requests.get(f"{base}/v1/tasks/{running}/result", timeout=10).status_code == 404
    assert _prompts(standin) == 1, "the cancelled pending task never ran"
    wait_for(lambda: not list(service.settings.work_dir.glob("*")), "the cancelled job's folder to go")

    standin.set_behaviour({})
    after = requests.post(f"{base}/v1/tasks/video", json=job, timeout=30).json()["task_id"]
    assert wait_status(base, after, "completed", "failed")["status"] == "completed"
    queue = requests.get(f"{base}/v1/tasks/queue/status", timeout=10).json()
    assert queue["queue_available"] == 2 and not queue["is_processing"]


def test_a_restarted_service_still_has_its_tasks_and_results(lightx2v_service, media, tmp_path):
    service = lightx2v_service()
    job = {"image_path": str(media["portrait"]), "audio_path": str(media["one"]), "target_shape": [256, 256]}
    task = requests.post(f"{service.base}/v1/tasks/video", json=job, timeout=30).json()
    assert wait_status(service.base, task["task_id"], "completed", "failed")["status"] == "completed"
    service.stop()

    again = Service(service.standin, service.settings).start()
    try:
        status = status_of(again.base, task["task_id"])
        assert status["status"] == "completed"
        info = download_video(again.base, task["task_id"], tmp_path / "kept.mp4")
        assert info["audio"] is not None
        assert requests.get(f"{again.base}/v1/service/status", timeout=10).json()["total_tasks"] == 1
    finally:
        again.stop()


def test_bad_media_fails_the_task_with_the_field_named_and_never_reaches_comfyui(lightx2v_service, media, tmp_path):
    service = lightx2v_service()
    base = service.base
    missing = requests.post(
        f"{base}/v1/tasks/video",
        json={"image_path": str(media["portrait"]), "audio_path": str(tmp_path / "volume" / "nothing.wav")},
        timeout=30,
    ).json()
    failed = wait_status(base, missing["task_id"], "completed", "failed")
    assert failed["status"] == "failed" and failed["error_type"] == "InputError"
    assert failed["error"].startswith("audio_path: ") and "does not exist" in failed["error"]
    not_a_video = requests.post(
        f"{base}/v1/tasks/video",
        json={"image_path": b64(media["one"]), "audio_path": str(media["one"])},
        timeout=30,
    ).json()
    failed = wait_status(base, not_a_video["task_id"], "completed", "failed")
    assert failed["status"] == "failed" and failed["error"].startswith("image_path: ")
    assert _prompts(service.standin) == 0


def test_a_long_task_stopped_by_its_deadline_keeps_the_windows_it_made(lightx2v_service, tmp_path):
    """Long-form video (frames streamed to disk): a deadline in window 3 still leaves an MP4 of
    the first two windows to download, and the status says what is missing."""
    service = lightx2v_service(
        {"fail": "hang", "at_window": 3, "step_delay_s": 0.02}, longform_threshold_s=5.0, job_timeout_s=6.0
    )
    base = service.base
    volume = service.settings.volume_dir
    job = {
        "image_path": str(mediagen.portrait(volume / "face.png", 256, 256)),
        "audio_path": str(mediagen.speech(volume / "long.wav", seconds=12.0)),
        "target_shape": [256, 256],
        "infer_steps": 2,
    }
    task = requests.post(f"{base}/v1/tasks/video", json=job, timeout=30).json()["task_id"]
    ended = wait_status(base, task, "completed", "failed")
    assert ended["status"] == "completed", ended["error"]
    assert ended["error"].startswith("partial video: ") and "2 of 5 windows" in ended["error"]
    info = download_video(base, task, tmp_path / "partial.mp4")
    assert info["video"]["frames"] == 81 + 72 and info["audio"] is not None
