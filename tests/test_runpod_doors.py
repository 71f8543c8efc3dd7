"""The worker as RunPod runs it: `python handler.py` against RunPod's job API, `--test_input`,
and `--rp_serve_api` with a real HTTP client — the real `runpod` SDK in every case."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests import mediagen
from tests.runpod_fake import FakeRunPod
from tests.worker_proc import WorkerProcess, local_api, worker_env

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def media(tmp_path):
    volume = tmp_path / "volume"
    return {
        "volume": volume,
        "portrait": mediagen.portrait(volume / "portrait.png", 400, 400),
        "speech": mediagen.speech(volume / "speech.wav", "Testing the worker on RunPod.", seconds=2.5),
    }


def _env(settings, **extra) -> dict[str, str]:
    return worker_env(settings.to_env(), **extra)


@pytest.fixture
def worker_on_runpod(comfy_standin, media):
    """`python handler.py` as a RunPod serverless worker, taking jobs from a fake RunPod."""
    started = []

    def start(behaviour: dict | None = None, **overrides):
        standin = comfy_standin(behaviour=behaviour or {})
        settings = standin.settings(volume_dir=media["volume"], **overrides)
        fake = FakeRunPod()
        worker = WorkerProcess([], _env(settings, **fake.env()))
        started.append((worker, fake))
        return standin, settings, fake, worker

    yield start
    for worker, fake in started:
        worker.stop()
        fake.close()


def _job(media) -> dict:
    return {"image_path": str(media["portrait"]), "wav_path": str(media["speech"]), "width": 256, "height": 256}


def test_worker_sends_progress_then_the_video_to_runpod(worker_on_runpod, media, tmp_path):
    standin, settings, fake, _ = worker_on_runpod({"step_delay_s": 0.05})
    fake.submit("job-progress", _job(media))
    final = fake.final("job-progress")
    assert "error" not in final, final.get("error")
    video = tmp_path / "out.mp4"
    video.write_bytes(base64.b64decode(final["output"]["video"], validate=True))
    info = mediagen.probe(video)
    assert (info["video"]["width"], info["video"]["height"]) == (256, 256)
    progress = fake.progress("job-progress")
    assert progress, "RunPod must receive progress updates while the job runs"
    assert all({"stage", "message", "percent"} <= set(p) for p in progress)
    assert any(p.get("window") and p.get("windows") for p in progress)
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents), "a progress bar never moves backwards"
    time.sleep(1.0)  # anything the worker still had in flight lands now
    posts = [p for p in fake.posts if p["job_id"] == "job-progress"]
    assert posts[-1].get("status") != "IN_PROGRESS", "no progress update may follow the result"
    assert not list(settings.work_dir.glob("*")), "the job folder is removed"


def test_comfyui_failure_asks_runpod_for_a_fresh_worker(worker_on_runpod, media):
    standin, settings, fake, _ = worker_on_runpod(comfy_ready_timeout_s=2.0)
    standin.kill()
    fake.submit("job-down", _job(media))
    final = fake.final("job-down")
    assert "ComfyUI" in final["error"]
    assert final.get("stopPod") is True


def test_cancel_on_runpod_interrupts_comfyui_and_cleans_up(worker_on_runpod, media):
    standin, settings, fake, _ = worker_on_runpod({"fail": "hang", "at_window": 1})
    fake.submit("job-cancel", _job(media))
    deadline = time.monotonic() + 60
    while not any(r["path"] == "/prompt" and r["method"] == "POST" for r in standin.requests()):
        assert time.monotonic() < deadline, "the job never reached ComfyUI"
        time.sleep(0.2)
    fake.stop("job-cancel")
    while not any(r["path"] == "/interrupt" for r in standin.requests()):
        assert time.monotonic() < deadline, "a cancelled job must interrupt ComfyUI"
        time.sleep(0.2)
    while list(settings.work_dir.glob("*")):
        assert time.monotonic() < deadline, "a cancelled job must remove its files"
        time.sleep(0.2)


def test_test_input_runs_one_job_and_reports_errors(comfy_standin, media):
    standin = comfy_standin(behaviour={})
    settings = standin.settings(volume_dir=media["volume"])
    ok = subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps({"input": _job(media)})],
        cwd=REPO, env=_env(settings), capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    bad = subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps({"input": {**_job(media), "width": 4096}})],
        cwd=REPO, env=_env(settings), capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1
    assert "width: 4096 is above the maximum 1280" in bad.stdout + bad.stderr


def test_local_api_run_and_status(comfy_standin, media, tmp_path):
    standin = comfy_standin(behaviour={})
    settings = standin.settings(volume_dir=media["volume"])
    with local_api(_env(settings)) as (base, _):
        job = requests.post(f"{base}/run", json={"input": _job(media)}, timeout=10).json()
        status = requests.post(f"{base}/status/{job['id']}", timeout=120).json()
        assert status["status"] == "COMPLETED", status
        video = tmp_path / "api.mp4"
        video.write_bytes(base64.b64decode(status["output"]["video"]))
        assert mediagen.probe(video)["audio"] is not None

        prompts_before = sum(r["path"] == "/prompt" and r["method"] == "POST" for r in standin.requests())
        bad_input = {"image_url": "file:///etc/passwd", "wav_path": str(media["speech"])}
        bad = requests.post(f"{base}/run", json={"input": bad_input}, timeout=10).json()
        status = requests.post(f"{base}/status/{bad['id']}", timeout=60).json()
        assert status["status"] == "FAILED"
        assert status["error"].startswith("image_url:")
        prompts_after = sum(r["path"] == "/prompt" and r["method"] == "POST" for r in standin.requests())
        assert prompts_after == prompts_before, "bad input must not reach ComfyUI"
