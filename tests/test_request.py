"""The job input of API.md §1: defaults, what the clients in the field send, bounds, and the
shipped JSON Schema."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from infinitetalk_worker.errors import InputError
from infinitetalk_worker.request import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPT,
    MAX_SEED,
    SpeakerBox,
    input_schema,
    parse_request,
)
from infinitetalk_worker.settings import Settings
from tests import mediagen

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FILE = REPO / "schema" / "input.schema.json"
VOL = "/runpod-volume"


@pytest.fixture
def settings() -> Settings:
    return Settings()


def test_empty_input_gets_every_default(settings):
    r = parse_request({}, settings)
    assert (r.input_type, r.person_count, r.workflow) == ("image", "single", "I2V_single")
    assert (r.image, r.video, r.audio, r.audio_2) == (None, None, None, None)
    assert r.prompt == DEFAULT_PROMPT == "A person talking naturally"
    assert r.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert (r.width, r.height, r.max_frame) == (512, 512, None)
    assert (r.force_offload, r.network_volume, r.long_form) == (True, False, None)
    assert (r.steps, r.cfg, r.audio_scale, r.multi_audio_type) == (6, 1.0, 1.0, "para")
    assert r.speaker_boxes == (SpeakerBox(0, 0, 0.5, 1), SpeakerBox(0.5, 0, 1, 1))
    assert 0 <= r.seed < 2**32


@pytest.mark.parametrize(
    "input_type, person_count, workflow",
    [("image", "single", "I2V_single"), ("image", "multi", "I2V_multi"),
     ("video", "single", "V2V_single"), ("video", "multi", "V2V_multi"),
     ("VIDEO", " Multi ", "V2V_multi")],
)
def test_the_pair_picks_the_workflow(settings, input_type, person_count, workflow):
    r = parse_request({"input_type": input_type, "person_count": person_count}, settings)
    assert r.workflow == workflow


def test_engui_studio_request_with_volume_paths_only(settings):
    # Engui Studio: volume paths, image_path and video_path together, wav_path_2 with single,
    # no prompt, floats and nulls for the size.
    job = {
        "input_type": "image", "person_count": "single",
        "image_path": f"{VOL}/in/face.png", "video_path": f"{VOL}/in/clip.mp4",
        "wav_path": f"{VOL}/in/voice.wav", "wav_path_2": f"{VOL}/in/other.wav",
        "width": 640.0, "height": None, "max_frame": None, "network_volume": True,
        "force_offload": False,
    }
    r = parse_request(job, settings)
    assert r.image.kind == "path" and r.image.value == f"{VOL}/in/face.png"
    assert r.video is None and r.audio_2 is None  # the unused media are ignored
    assert r.audio.field == "wav_path"
    assert r.prompt == DEFAULT_PROMPT
    assert (r.width, r.height, r.max_frame) == (640, 512, None)
    assert (r.network_volume, r.force_offload) == (True, False)


def test_video_request_ignores_the_image_fields(settings):
    r = parse_request({"input_type": "video", "image_path": 12345,
                       "image_url": "ftp://ignored", "video_path": f"{VOL}/c.mp4"}, settings)
    assert r.image is None and r.video.value == f"{VOL}/c.mp4"


def test_single_ignores_even_malformed_speaker_2_fields(settings):
    r = parse_request({"wav_path_2": 7, "wav_url_2": "gopher://x", "wav_base64_2": "@@"},
                      settings)
    assert r.audio_2 is None


def test_network_volume_absent_or_null_means_false(settings):
    assert parse_request({}, settings).network_volume is False
    assert parse_request({"network_volume": None}, settings).network_volume is False
    assert parse_request({"network_volume": True}, settings).network_volume is True


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_absent_or_empty_prompt_is_the_default(settings, prompt):
    job = {} if prompt is None else {"prompt": prompt}
    assert parse_request(job, settings).prompt == DEFAULT_PROMPT


def test_prompts_are_kept_and_an_empty_negative_prompt_means_none(settings):
    r = parse_request({"prompt": " A woman sings ", "negative_prompt": ""}, settings)
    assert (r.prompt, r.negative_prompt) == ("A woman sings", "")


@pytest.mark.parametrize(
    "value, snapped",
    [(256, 256), (500, 496), (504, 512), (639.9, 640), (832.0, 832), (1280, 1280),
     (1279.5, 1280), (None, 512)],
)
def test_width_and_height_snap_to_the_16_grid(settings, value, snapped):
    r = parse_request({"width": value, "height": value}, settings)
    assert (r.width, r.height) == (snapped, snapped)


@pytest.mark.parametrize("value", [255, 1281, 0, -16, 1e9])
def test_sizes_out_of_bounds_name_the_bound(settings, value):
    with pytest.raises(InputError) as err:
        parse_request({"width": value}, settings)
    assert err.value.field == "width"
    assert ("1280" in str(err.value)) or ("256" in str(err.value))


def test_whole_numbers_may_come_as_floats(settings):
    r = parse_request({"max_frame": 81.0, "steps": 8.0, "seed": 42.0, "cfg": 2,
                       "audio_scale": 1.5}, settings)
    assert (r.max_frame, r.steps, r.seed, r.cfg, r.audio_scale) == (81, 8, 42, 2.0, 1.5)
    assert isinstance(r.max_frame, int) and isinstance(r.cfg, float)


def test_max_frame_bound_follows_the_setting(settings):
    assert parse_request({"max_frame": 15000}, settings).max_frame == 15000
    with pytest.raises(InputError, match=r"max_frame: 15001 is above the maximum 15000"):
        parse_request({"max_frame": 15001}, settings)
    small = settings.replace(max_frames=100)
    with pytest.raises(InputError, match=r"above the maximum 100 \(MAX_FRAMES\)"):
        parse_request({"max_frame": 101}, small)


def test_seed_is_echoed_random_when_absent_or_minus_one(settings):
    assert parse_request({"seed": MAX_SEED}, settings).seed == MAX_SEED
    assert parse_request({"seed": 0}, settings).seed == 0
    drawn = {parse_request({"seed": s}, settings).seed for s in (None, -1, None, -1, None)}
    assert len(drawn) > 1 and all(0 <= s < 2**32 for s in drawn)


def test_generation_bounds_are_inclusive(settings):
    r = parse_request({"steps": 50, "cfg": 20, "audio_scale": 10}, settings)
    assert (r.steps, r.cfg, r.audio_scale) == (50, 20.0, 10.0)
    r = parse_request({"steps": 1, "cfg": 0, "audio_scale": 0}, settings)
    assert (r.steps, r.cfg, r.audio_scale) == (1, 0.0, 0.0)


def test_speaker_layout_and_explicit_boxes(settings):
    multi = {"person_count": "multi"}
    r = parse_request({**multi, "speaker_layout": "right_left"}, settings)
    assert r.speaker_boxes == (SpeakerBox(0.5, 0, 1, 1), SpeakerBox(0, 0, 0.5, 1))
    r = parse_request({**multi, "speaker_boxes": [[0.1, 0.2, 0.4, 0.9], [0.6, 0, 1, 0.5]]},
                      settings)
    assert r.speaker_boxes == (SpeakerBox(0.1, 0.2, 0.4, 0.9), SpeakerBox(0.6, 0, 1, 0.5))
    r = parse_request({**multi, "multi_audio_type": "add"}, settings)
    assert r.multi_audio_type == "add"


def test_one_source_per_medium_and_empty_strings_are_absent(settings):
    r = parse_request({"image_path": "", "image_url": None,
                       "image_base64": "data:image/png;base64,iVBORw0KGgo="}, settings)
    assert r.image.kind == "base64" and r.image.field == "image_base64"
    with pytest.raises(InputError) as err:
        parse_request({"image_path": "/runpod-volume/a.png", "image_base64": "iVBORw0KGgo="},
                      settings)
    assert err.value.field == "image_path"
    assert "image_path and image_base64" in str(err.value)


def test_data_uri_and_raw_base64_give_the_same_payload(settings, tmp_path):
    face = mediagen.portrait(tmp_path / "face.png", 64, 64)
    raw = base64.b64encode(face.read_bytes()).decode()
    wrapped = "data:image/png;base64," + raw[:40] + "\n" + raw[40:]
    a = parse_request({"image_base64": raw}, settings).image
    b = parse_request({"image_base64": wrapped}, settings).image
    assert a.value == b.value == raw
    assert raw not in repr(a) and raw[:20] not in repr(b)
    assert "base64 characters" in repr(a)


def test_urls_are_kept_for_the_media_stage_and_their_tokens_kept_out_of_logs(settings):
    url = "https://bucket.s3.example.com/v.mp3?X-Amz-Signature=0123456789abcdef&X-Amz-Expires=60"
    r = parse_request({"wav_url": f" {url} "}, settings)
    assert (r.audio.kind, r.audio.value) == ("url", url)
    assert "0123456789abcdef" not in repr(r) and "bucket.s3.example.com/v.mp3" in repr(r)


def test_unknown_fields_are_ignored(settings):
    r = parse_request({"workflow": "x", "lora": [1, 2], "fps": 30, "trim_to_audio": True},
                      settings)
    assert r.workflow == "I2V_single"


def test_errors_are_one_sentence_naming_the_field(settings):
    with pytest.raises(InputError) as err:
        parse_request({"input_type": "movie"}, settings)
    assert str(err.value) == 'input_type: "movie" is not one of "image" or "video"'
    with pytest.raises(InputError) as err:
        parse_request({"width": 4096}, settings)
    assert str(err.value) == "width: 4096 is above the maximum 1280"


def test_oversize_base64_reports_the_cap_before_decoding(settings):
    small = settings.replace(max_base64_mb=1)
    payload = "A" * (2 * 1024 * 1024)
    with pytest.raises(InputError, match=r"wav_base64: .* above the 1 MB limit \(MAX_BASE64_MB\)"):
        parse_request({"wav_base64": payload}, small)


# --- the JSON Schema ----------------------------------------------------------------------------


def test_committed_schema_is_generated_from_the_definition():
    done = subprocess.run(
        [sys.executable, "-m", "infinitetalk_worker.request", "--schema"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    assert SCHEMA_FILE.read_text() == done.stdout, (
        "schema/input.schema.json is stale: run "
        "python -m infinitetalk_worker.request --schema > schema/input.schema.json"
    )
    assert json.loads(done.stdout) == input_schema()


CLIENT_SHAPED = [
    {},
    {"image_path": f"{VOL}/a.png", "video_path": f"{VOL}/b.mp4", "wav_path": f"{VOL}/c.wav",
     "wav_path_2": f"{VOL}/d.wav", "width": 512.0, "height": None, "network_volume": True},
    {"input_type": "video", "person_count": "multi", "video_url": "https://x.test/v.mp4",
     "wav_base64": "UklGRg==", "wav_url_2": "https://x.test/b.mp3", "max_frame": 81.0,
     "seed": -1, "steps": 4, "cfg": 1.5, "audio_scale": 2, "multi_audio_type": "add",
     "speaker_boxes": [[0, 0, 0.5, 1], [0.5, 0, 1, 1]], "long_form": None, "extra": 1},
]


@pytest.mark.parametrize("job", CLIENT_SHAPED)
def test_schema_accepts_what_clients_send_and_the_parser_agrees(settings, job):
    jsonschema.validate(job, json.loads(SCHEMA_FILE.read_text()))
    parse_request(job, settings)


@pytest.mark.parametrize(
    "job, field",
    [({"input_type": "audio"}, "input_type"), ({"width": "wide"}, "width"),
     ({"width": 4096}, "width"), ({"max_frame": -5}, "max_frame"),
     ({"max_frame": 10.5}, "max_frame"), ({"force_offload": "yes"}, "force_offload"),
     ({"steps": 0}, "steps"), ({"seed": -7}, "seed"), ({"prompt": 5}, "prompt"),
     ({"speaker_boxes": [[0, 0, 1]]}, "speaker_boxes"),
     ({"multi_audio_type": "both"}, "multi_audio_type")],
)
def test_schema_rejects_what_the_parser_rejects(settings, job, field):
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(job)), f"the schema accepts {job}"
    with pytest.raises(InputError) as err:
        parse_request(job, settings)
    assert err.value.field == field
