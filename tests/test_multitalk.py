"""Jobs in the earlier MultiTalk worker's shape (API.md §4), through the RunPod handler.

The translation is checked through the real request parser (what the pipeline would run), and
whole jobs go through `python handler.py --test_input` and the runpod SDK's local HTTP API with
the ComfyUI stand-in behind them.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from infinitetalk_worker import multitalk
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.settings import Settings
from tests import mediagen
from tests.worker_proc import local_api

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def volume(tmp_path) -> dict:
    folder = tmp_path / "volume"
    return {
        "folder": folder,
        "portrait": mediagen.portrait(folder / "portrait.png", 320, 320),
        "one": mediagen.speech(folder / "one.wav", "Hello from the first speaker.", seconds=1.6),
        "two": mediagen.speech(folder / "two.mp3", "And hello from the second.", seconds=1.2),
    }


def parsed(job_input: dict, settings: Settings):
    assert multitalk.is_multitalk(job_input)
    return parse_request(multitalk.to_job_input(job_input), settings)


# --- the translation ----------------------------------------------------------------------------


def test_one_speaker_with_sample_settings(volume):
    settings = Settings(volume_dir=volume["folder"])
    image_b64 = base64.b64encode(volume["portrait"].read_bytes()).decode()
    request = parsed(
        {
            "prompt": "A woman reads the news",
            "image_path": image_b64,
            "audio_paths": {"person1": "https://example.com/speech.wav"},
            "sample_steps": 8,
            "sample_text_guide_scale": 1.5,
            "sample_audio_guide_scale": 2.0,
            "mode": "clip",
        },
        settings,
    )
    assert request.workflow == "I2V_single"
    assert (request.image.field, request.image.kind) == ("image_base64", "base64")
    assert (request.audio.field, request.audio.kind) == ("wav_url", "url")
    assert (request.steps, request.cfg, request.audio_scale) == (8, 1.5, 2.0)
    assert request.max_frame == 81, "clip mode makes one 81-frame window"
    assert request.prompt == "A woman reads the news"


def test_two_speakers_become_a_multi_job(volume):
    settings = Settings(volume_dir=volume["folder"])
    data_uri = "data:audio/mpeg;base64," + base64.b64encode(volume["two"].read_bytes()).decode()
    request = parsed(
        {
            "prompt": "Two friends chat",
            "image_path": str(volume["portrait"]),
            "audio_paths": {"person1": str(volume["one"]), "person2": data_uri},
            "audio_type": "add",
            "mode": "streaming",
        },
        settings,
    )
    assert request.workflow == "I2V_multi"
    assert request.image.kind == "path" and request.audio.kind == "path"
    assert (request.audio_2.field, request.audio_2.kind) == ("wav_base64_2", "base64")
    assert request.multi_audio_type == "add"
    assert request.max_frame is None, "streaming follows the audio"


def test_plain_jobs_are_not_taken_for_multitalk():
    assert not multitalk.is_multitalk({"image_path": "/runpod-volume/a.png", "wav_path": "/runpod-volume/a.wav"})
    assert multitalk.is_multitalk({"prompt": "x", "audio_paths": {"person1": "a.wav"}})


@pytest.mark.parametrize(
    "job_input,message",
    [
        ({"audio_paths": ["a.wav"]}, "audio_paths: must be an object"),
        ({"audio_paths": {"speaker": "a.wav"}}, "audio_paths: unknown key 'speaker'"),
        ({"audio_paths": {"person2": "b.wav"}}, "audio_paths: person2 is given without person1"),
        ({"audio_paths": {"person1": 5}}, "audio_paths.person1: must be a path"),
        ({"audio_paths": {"person1": "a.wav"}, "mode": "loop"}, "mode: 'loop' is not one of streaming, clip"),
        ({"audio_paths": {"person1": "a.wav"}, "wav_url": "https://x/a.wav"}, "wav_url: not part of the MultiTalk"),
        ({"audio_paths": {"person1": "a.wav"}, "steps": 4}, "steps: not part of the MultiTalk input shape; give it as sample_steps"),
    ],
)
def test_malformed_multitalk_input_names_the_field(job_input, message):
    with pytest.raises(InputError) as caught:
        multitalk.to_job_input({"prompt": "x", **job_input})
    assert str(caught.value).startswith(message)


def test_results_and_errors_in_the_multitalk_shape():
    assert multitalk.shape_result({"video": "AAAA", "seed": 3}, "abc-1") == {
        "status": "success",
        "video_base64": "AAAA",
        "filename": "infinitetalk-abc-1.mp4",
        "seed": 3,
    }
    url = multitalk.shape_result({"video_url": "https://bucket.example/r/x1.mp4?sig=1"}, "j")
    assert url == {"status": "success", "video_url": "https://bucket.example/r/x1.mp4?sig=1", "filename": "x1.mp4"}
    # The parser names §1 fields; the MultiTalk caller reads the names they sent.
    assert multitalk.shape_result({"error": "steps: 500 is above the maximum 50"}, "j") == {
        "error": "sample_steps: 500 is above the maximum 50"
    }
    renamed = multitalk.shape_result({"error": "wav_path_2: /x.wav does not exist", "refresh_worker": False}, "j")
    assert renamed == {"error": "audio_paths.person2: /x.wav does not exist", "refresh_worker": False}


# --- whole jobs through the RunPod doors --------------------------------------------------------


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(settings.to_env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _job_result(output: str) -> dict:
    line = next(l for l in output.splitlines() if "Job result: " in l)
    return ast.literal_eval(line.split("Job result: ", 1)[1].strip())


def test_multitalk_job_through_test_input(comfy_standin, volume, tmp_path):
    standin = comfy_standin(behaviour={})
    results = tmp_path / "results"
    settings = standin.settings(volume_dir=volume["folder"], output_dir=results)
    job = {
        "input": {
            "prompt": "Two people talk",
            "image_path": str(volume["portrait"]),
            "audio_paths": {"person1": str(volume["one"]), "person2": str(volume["two"])},
            "audio_type": "para",
            "sample_steps": 4,
            "width": 256,
            "height": 256,
            "network_volume": True,
        }
    }
    done = subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps(job)],
        cwd=REPO, env=_env(settings), capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = _job_result(done.stdout + done.stderr)["output"]
    assert output["status"] == "success"
    video = Path(output["video_path"])
    assert output["filename"] == video.name and video.parent == results
    info = mediagen.probe(video)
    assert (info["video"]["width"], info["video"]["height"]) == (256, 256)
    assert info["audio"] is not None
    assert output["workflow"] == "I2V_multi"

    bad = subprocess.run(
        [sys.executable, "handler.py", "--test_input",
         json.dumps({"input": {**job["input"], "sample_steps": 500}})],
        cwd=REPO, env=_env(settings), capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1
    assert "sample_steps: 500 is above the maximum 50" in bad.stdout + bad.stderr

    malformed = subprocess.run(
        [sys.executable, "handler.py", "--test_input",
         json.dumps({"input": {**job["input"], "audio_paths": [str(volume["one"])]}})],
        cwd=REPO, env=_env(settings), capture_output=True, text=True, timeout=120,
    )
    assert malformed.returncode == 1
    said = malformed.stdout + malformed.stderr
    assert "audio_paths: must be an object" in said
    assert "Traceback" not in said and "error_traceback" not in said, "a sentence, never a traceback"


def test_multitalk_job_through_the_local_api(comfy_standin, volume, tmp_path):
    standin = comfy_standin(behaviour={})
    settings = standin.settings(volume_dir=volume["folder"])
    with local_api(_env(settings)) as (base, _):
        audio_b64 = base64.b64encode(volume["one"].read_bytes()).decode()
        job_input = {
            "prompt": "A person talking",
            "image_path": str(volume["portrait"]),
            "audio_paths": {"person1": audio_b64},
            "width": 256,
            "height": 256,
        }
        job = requests.post(f"{base}/run", json={"input": job_input}, timeout=10).json()
        status = requests.post(f"{base}/status/{job['id']}", timeout=180).json()
        assert status.get("status") == "COMPLETED", (job, str(status)[:2000])
        output = status["output"]
        assert output["status"] == "success" and re.fullmatch(r"[\w-]+\.mp4", output["filename"])
        assert "video" not in output, "one result key: video_base64"
        video = tmp_path / output["filename"]
        video.write_bytes(base64.b64decode(output["video_base64"], validate=True))
        info = mediagen.probe(video)
        assert info["audio"] is not None and info["duration_s"] > 1.0

        bad_input = {**job_input, "audio_paths": {"person1": str(volume["folder"] / "missing.wav")}}
        bad = requests.post(f"{base}/run", json={"input": bad_input}, timeout=10).json()
        status = requests.post(f"{base}/status/{bad['id']}", timeout=60).json()
        assert status["status"] == "FAILED"
        assert status["error"].startswith("audio_paths.person1:"), status["error"]
