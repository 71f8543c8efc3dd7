"""End to end through the RunPod door: the handler function, with the ComfyUI stand-in behind it.

Every case here is what a caller of the endpoint would see: a playable MP4 of the right size,
length and sound, or one sentence saying what to change — and nothing left behind either way.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import pytest

import handler as worker
from infinitetalk_worker.settings import Settings
from tests import mediagen
from tests.standin.values import vhs_target_size


@pytest.fixture
def run_job(comfy_standin, tmp_path, monkeypatch):
    """Start a stand-in and return a function that runs one job through `handler.handler`."""

    def start(behaviour: dict | None = None, **overrides):
        standin = comfy_standin(behaviour=behaviour or {})
        settings: Settings = standin.settings(**overrides)
        for name, value in settings.to_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("RUNPOD_WEBHOOK_POST_OUTPUT", raising=False)
        monkeypatch.setattr(worker, "_pipeline", None)

        def job(job_input: dict, job_id: str = "job-1", **extra) -> dict:
            return asyncio.run(worker.handler({"id": job_id, "input": job_input, **extra}))

        job.standin = standin
        job.settings = settings
        return job

    return start


def _decode_video(result: dict, tmp_path: Path, name: str = "out.mp4") -> dict:
    assert "error" not in result, result.get("error")
    path = tmp_path / name
    path.write_bytes(base64.b64decode(result["video"], validate=True))
    return mediagen.probe(path)


def _prompts_sent(standin) -> int:
    return sum(1 for r in standin.requests() if r["method"] == "POST" and r["path"] == "/prompt")


def _leftovers(settings: Settings) -> list[Path]:
    """Files a finished job must not leave: its work folder and its ComfyUI inputs/outputs."""
    found = []
    for folder in (settings.work_dir, settings.comfy_input_dir, settings.comfy_output_dir, settings.comfy_temp_dir):
        if folder.exists():
            found += [p for p in folder.rglob("*") if p.is_file() and "rp-" in str(p.relative_to(folder))]
    if settings.work_dir.exists():
        found += [p for p in settings.work_dir.iterdir()]
    return found


@pytest.fixture
def speech_files(tmp_path):
    volume = tmp_path / "volume"
    return {
        "one": mediagen.speech(volume / "speech_one.wav", "Hello, I am the first speaker of this test.", seconds=3.2),
        "two": mediagen.speech(volume / "speech_two.mp3", "And I am the second speaker.", seconds=2.0),
        "portrait": mediagen.portrait(volume / "portrait.jpg", 480, 640),
        "clip": mediagen.video(volume / "clip.mp4", seconds=2.0, fps=25, width=320, height=240),
        "volume": volume,
    }


@pytest.mark.parametrize(
    "input_type,person_count",
    [("image", "single"), ("image", "multi"), ("video", "single"), ("video", "multi")],
)
def test_each_workflow_makes_a_playable_video(run_job, speech_files, tmp_path, input_type, person_count):
    job = run_job(volume_dir=speech_files["volume"])
    job_input = {
        "input_type": input_type,
        "person_count": person_count,
        "image_path": str(speech_files["portrait"]),
        "video_path": str(speech_files["clip"]),
        "wav_path": str(speech_files["one"]),
        "wav_path_2": str(speech_files["two"]),
        "width": 320.0,
        "height": 256,
        "prompt": "",
    }
    result = job(job_input)
    info = _decode_video(result, tmp_path)
    workflow = f"{'I2V' if input_type == 'image' else 'V2V'}_{person_count}"
    assert result["workflow"] == workflow
    assert (info["video"]["width"], info["video"]["height"]) == (320, 256)
    assert info["audio"] is not None, "the speech must be muxed into the MP4"
    expected_s = 3.2  # single, or para: the longer track (speaker 1) sets the length
    assert abs(info["duration_s"] - expected_s) < 0.5
    fps = info["video"]["fps"]
    assert abs(info["video"]["frames"] - expected_s * fps) <= 0.2 * fps
    assert result["frames"] == info["video"]["frames"]
    assert isinstance(result["seed"], int)
    assert _leftovers(job.settings) == []


@pytest.mark.parametrize("rotation, custom", [(0, (0, 256)), (90, (320, 0))])
def test_v2v_loads_the_source_near_the_output_size(run_job, speech_files, tmp_path, rotation, custom):
    """A 640x360 clip for a 320x256 video is loaded at a size that just covers 320x256 (one side
    bound, the other from the aspect ratio), not whole; Resize still crops it to 320x256. An
    upright phone clip (stored landscape, display matrix 90) is sized as the frames come out."""
    clip = mediagen.video(speech_files["volume"] / "wide.mp4", seconds=2.0, fps=25, width=640, height=360,
                          rotation=rotation)
    job = run_job(volume_dir=speech_files["volume"])
    result = job({"input_type": "video", "video_path": str(clip), "wav_path": str(speech_files["one"]),
                  "width": 320, "height": 256, "prompt": ""})
    info = _decode_video(result, tmp_path)
    assert (info["video"]["width"], info["video"]["height"]) == (320, 256)
    [sent] = [r["body"]["prompt"] for r in job.standin.requests()
              if r["method"] == "POST" and r["path"] == "/prompt"]
    [source] = [node["inputs"] for node in sent.values() if node["_meta"]["title"] == "Source video"]
    assert (source["custom_width"], source["custom_height"]) == custom
    frames = (640, 360) if rotation == 0 else (360, 640)
    loaded = vhs_target_size(*frames, *custom, 1)          # format "None": 1-pixel rounding
    assert loaded[0] >= 320 and loaded[1] >= 256 and loaded[0] * loaded[1] < 640 * 360
    assert _leftovers(job.settings) == []


def test_add_mode_covers_both_speakers_one_after_the_other(run_job, speech_files, tmp_path):
    job = run_job(volume_dir=speech_files["volume"])
    result = job({
        "person_count": "multi", "multi_audio_type": "add",
        "image_path": str(speech_files["portrait"]),
        "wav_path": str(speech_files["one"]), "wav_path_2": str(speech_files["two"]),
    })
    info = _decode_video(result, tmp_path)
    assert abs(info["duration_s"] - 5.2) < 0.5


def test_no_media_uses_the_bundled_examples_and_says_so(run_job, tmp_path):
    job = run_job()
    result = job({})
    info = _decode_video(result, tmp_path)
    assert info["video"]["frames"] > 0 and info["audio"] is not None
    warnings = " ".join(result["warnings"])
    assert "example" in warnings and "image" in warnings and ("wav" in warnings or "audio" in warnings)


def test_same_seed_is_echoed_and_random_seeds_differ(run_job, speech_files):
    job = run_job(volume_dir=speech_files["volume"])
    base = {"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])}
    assert job({**base, "seed": 1234})["seed"] == 1234
    assert job(base)["seed"] != job(base)["seed"]


def test_max_frame_beyond_the_audio_makes_a_video_as_long_as_the_audio(run_job, speech_files, tmp_path):
    """InfiniteTalk stops where the audio stops; a max_frame past it is cut to the audio, and
    the result says so instead of reporting frames that were never made."""
    job = run_job(volume_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"]),
                  "max_frame": 12000})
    info = _decode_video(result, tmp_path)
    assert abs(info["duration_s"] - 3.2) < 0.5
    assert result["frames"] == info["video"]["frames"] <= 81
    assert any(w.startswith("max_frame: 12000 is more than the audio's") for w in result["warnings"])
    [sent] = [r["body"]["prompt"] for r in job.standin.requests()
              if r["method"] == "POST" and r["path"] == "/prompt"]
    [count] = [nid for nid, node in sent.items() if node["_meta"]["title"] == "Frame count"]
    assert result["frames"] <= sent[count]["inputs"]["value"] <= 81  # the audio's frames, not 12000
    [embeds] = [node for node in sent.values() if node["_meta"]["title"] == "Audio embeds"]
    assert embeds["inputs"]["num_frames"] == [count, 0]
    assert _leftovers(job.settings) == []


def test_validation_error_from_comfyui_is_one_readable_sentence(run_job, speech_files):
    job = run_job(volume_dir=speech_files["volume"])
    models = job.standin.base_dir / "models"
    for model in models.rglob("*.safetensors"):
        model.unlink()  # as when the model volume is not mounted
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    error = result["error"]
    assert error.startswith("ComfyUI rejected the workflow")
    assert "model" in error and "volume" in error
    assert "Traceback" not in error and "\n" not in error
    assert _leftovers(job.settings) == []


def test_execution_error_names_node_and_exception(run_job, speech_files):
    job = run_job({"fail": "exec_error"}, volume_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    assert "error" in result and "Traceback" not in result["error"]
    assert "'" in result["error"]  # names the node
    assert _leftovers(job.settings) == []


def test_out_of_memory_error_gives_the_fix(run_job, speech_files):
    job = run_job({"fail": "oom", "at_window": 1}, volume_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"]),
                  "force_offload": False})
    error = result["error"]
    assert "out of GPU memory" in error or "out of memory" in error
    assert "force_offload" in error and "smaller" in error


def test_comfyui_down_at_start_fails_fast_and_replaces_the_worker(run_job, speech_files):
    job = run_job(volume_dir=speech_files["volume"], comfy_ready_timeout_s=3.0)
    job.standin.kill()
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    assert "ComfyUI" in result["error"]
    assert result.get("refresh_worker") is True
    assert _leftovers(job.settings) == []


def test_comfyui_dying_mid_job_fails_clearly_and_replaces_the_worker(run_job, speech_files):
    job = run_job({"fail": "die", "at_window": 1}, volume_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    assert "ComfyUI" in result["error"]
    assert result.get("refresh_worker") is True


def test_websocket_drop_mid_job_still_completes(run_job, speech_files, tmp_path):
    job = run_job({"fail": "ws_drop", "at_window": 1}, volume_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    info = _decode_video(result, tmp_path)
    assert info["video"]["frames"] > 0


def test_hang_hits_the_deadline_and_interrupts_comfyui(run_job, speech_files):
    job = run_job({"fail": "hang", "at_window": 1}, volume_dir=speech_files["volume"], job_timeout_s=3.0)
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    assert "error" in result and ("deadline" in result["error"] or "JOB_TIMEOUT_S" in result["error"])
    assert any(r["path"] == "/interrupt" for r in job.standin.requests())
    assert _leftovers(job.settings) == []


def test_two_concurrent_jobs_do_not_collide(run_job, speech_files, tmp_path):
    job = run_job(volume_dir=speech_files["volume"])
    short = mediagen.speech(speech_files["volume"] / "short.wav", "Short one.", seconds=1.5)

    async def both():
        jobs = [
            {"id": name, "input": {"image_path": str(speech_files["portrait"]), "wav_path": str(wav), "seed": 5}}
            for name, wav in (("job-a", speech_files["one"]), ("job-b", short))
        ]
        return await asyncio.gather(*(worker.handler(j) for j in jobs))

    result_a, result_b = asyncio.run(both())
    a = _decode_video(result_a, tmp_path, "a.mp4")
    b = _decode_video(result_b, tmp_path, "b.mp4")
    assert abs(a["duration_s"] - 3.2) < 0.5 and abs(b["duration_s"] - 1.5) < 0.5
    assert _leftovers(job.settings) == []


def test_oversize_result_is_saved_to_the_volume_not_lost(run_job, speech_files):
    job = run_job(volume_dir=speech_files["volume"], output_dir=speech_files["volume"] / "out",
                  response_limit_mb=0.001)
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"])})
    assert "video" not in result
    path = Path(result["video_path"])
    assert path.is_file() and mediagen.probe(path)["video"]["frames"] > 0
    assert any("response limit" in w for w in result["warnings"])


def test_network_volume_true_returns_a_path_on_the_volume(run_job, speech_files):
    job = run_job(volume_dir=speech_files["volume"], output_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"]),
                  "network_volume": True})
    path = Path(result["video_path"])
    assert path.parent == speech_files["volume"] and path.suffix == ".mp4"
    assert mediagen.probe(path)["audio"] is not None


def test_a_job_id_with_any_characters_names_nothing_outside_plain_ascii(run_job, speech_files):
    """Job ids come from the caller's platform; they must not steer or garble file names."""
    job = run_job(volume_dir=speech_files["volume"], output_dir=speech_files["volume"])
    result = job({"image_path": str(speech_files["portrait"]), "wav_path": str(speech_files["one"]),
                  "network_volume": True}, job_id="작업/../ä b:1")
    path = Path(result["video_path"])
    assert path.parent == speech_files["volume"]
    assert re.fullmatch(r"infinitetalk_[A-Za-z0-9_-]+_[0-9a-f]{8}\.mp4", path.name), path.name
    assert mediagen.probe(path)["audio"] is not None
    assert _leftovers(job.settings) == []


def test_engui_studio_shaped_request(run_job, speech_files, tmp_path):
    """Engui Studio sends volume paths only, no prompt, floats, image_path and video_path together,
    wav_path_2 with single."""
    job = run_job(volume_dir=speech_files["volume"])
    result = job({
        "input_type": "image", "person_count": "single",
        "image_path": str(speech_files["portrait"]), "video_path": str(speech_files["clip"]),
        "wav_path": str(speech_files["one"]), "wav_path_2": str(speech_files["two"]),
        "width": 512.0, "height": None, "max_frame": None, "network_volume": False,
    })
    info = _decode_video(result, tmp_path)
    assert (info["video"]["width"], info["video"]["height"]) == (512, 512)
