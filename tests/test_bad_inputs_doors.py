"""The bad-input battery replayed through the front doors a caller uses: the handler function
and RunPod's local HTTP API. Each case must come back as one sentence naming the field, with
nothing sent to ComfyUI and no file left behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import requests

import handler as worker
from tests.bad_inputs import bad_inputs, battery_env, battery_settings
from tests.worker_proc import local_api, worker_env

REPO = Path(__file__).resolve().parent.parent


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _prompts(standin) -> int:
    return sum(1 for r in standin.requests() if r["method"] == "POST" and r["path"] == "/prompt")


def _assert_one_sentence(error: str, field: str, name: str) -> None:
    assert error.startswith(field) or f"{field}:" in error.split(";")[0], f"{name}: {error!r} does not name {field}"
    assert "\n" not in error and "Traceback" not in error, f"{name}: {error!r}"
    assert len(error) < 400, f"{name}: an error is one sentence, got {len(error)} characters"


@pytest.fixture
def battery(tmp_path, comfy_standin, monkeypatch):
    cases = bad_inputs(tmp_path)
    standin = comfy_standin(behaviour={})
    settings = standin.settings(**battery_settings(tmp_path))
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RUNPOD_WEBHOOK_POST_OUTPUT", raising=False)
    monkeypatch.setattr(worker, "_pipeline", None)
    return cases, standin, settings


def test_battery_through_the_handler(battery):
    cases, standin, settings = battery
    assert len(cases) >= 40
    volume_before = _snapshot(settings.volume_dir)
    comfy_before = _snapshot(settings.comfy_dir)
    for name, job_input, field in cases:
        result = asyncio.run(worker.handler({"id": f"bad-{len(name)}", "input": job_input}))
        assert set(result) <= {"error", "refresh_worker"} and "error" in result, f"{name}: {result}"
        assert "refresh_worker" not in result, f"{name}: bad input must not replace the worker"
        _assert_one_sentence(result["error"], field, name)
        assert _prompts(standin) == 0, f"{name}: bad input reached ComfyUI"
        assert not any(settings.work_dir.glob("*")), f"{name}: left files in the work folder"
    assert _snapshot(settings.volume_dir) == volume_before
    assert _snapshot(settings.comfy_dir) == comfy_before


def test_battery_through_the_local_http_api(battery, tmp_path):
    cases, standin, settings = battery
    with local_api(worker_env(settings.to_env(), **battery_env(tmp_path))) as (base, _):
        for name, job_input, field in cases:
            answer = requests.post(f"{base}/runsync", json={"input": job_input}, timeout=60)
            if answer.status_code == 422:  # the SDK's own schema refuses a non-object input
                assert not isinstance(job_input, dict), name
                continue
            status = answer.json()
            assert status["status"] == "FAILED", f"{name}: {status}"
            _assert_one_sentence(status["error"], field, name)
        assert _prompts(standin) == 0
        assert not any(settings.work_dir.glob("*"))
