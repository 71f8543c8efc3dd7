"""The battery of bad job inputs (API.md §1 and §3): each must fail with one sentence naming the
field, before anything is sent to ComfyUI, leaving no file behind.

Cases are data, `(case name, job input, field the error must name)`, reused by the request/media
tests (`tests/test_media.py`) and by the handler and HTTP-API tests, which replay them through
the front doors. Some cases point at real files, which `bad_inputs(root)` makes first:

    cases = bad_inputs(tmp_path)                   # writes tmp_path/volume and tmp_path/outside
    settings = Settings(**battery_settings(tmp_path))  # or the env: battery_env(tmp_path)
    for name, job_input, field in cases: ...

The caps are set low (`CAPS`) so that the oversize cases stay small. URL cases use IP literals
or `localhost` only: the SSRF check refuses them before any connection is made.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests import mediagen

Case = tuple[str, Any, str]

CAPS: dict[str, Any] = {"max_base64_mb": 1, "max_audio_s": 20.0, "max_frames": 400}


def battery_settings(root: Path) -> dict[str, Any]:
    """Settings overrides the battery expects: its volume folder and the low caps."""
    return {"volume_dir": Path(root) / "volume", **CAPS}


def battery_env(root: Path) -> dict[str, str]:
    """The same as environment variables, for a handler started as a process."""
    return {
        "VOLUME_DIR": str(Path(root) / "volume"),
        "MAX_BASE64_MB": str(CAPS["max_base64_mb"]),
        "MAX_AUDIO_S": str(CAPS["max_audio_s"]),
        "MAX_FRAMES": str(CAPS["max_frames"]),
    }


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def make_battery_files(root: Path) -> dict[str, Path]:
    """Real media (good, broken and misplaced) in root/volume, and a secret in root/outside."""
    volume, outside = Path(root) / "volume", Path(root) / "outside"
    volume.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    f = {
        "speech": mediagen.speech(volume / "speech.wav", "Good morning", seconds=2.0),
        "face": mediagen.portrait(volume / "face.png", 320, 320),
        "clip": mediagen.video(volume / "clip.mp4", 1.0, width=160, height=120),
        "speech_m4a": mediagen.tone(volume / "tone.m4a", 1.0),
        "long": mediagen.tone(volume / "long.mp3", CAPS["max_audio_s"] + 10),
        "noise": mediagen.noise(volume / "noise.wav", 40.0),  # 1.2 MB: above MAX_BASE64_MB
        "silent": mediagen.silent_wav(volume / "silent.wav"),
        "medium": mediagen.tone(volume / "medium.mp3", 18.0),  # 450 frames at 25 fps
        "tiny_face": mediagen.portrait(volume / "tiny.png", 8, 8),
        "secret": mediagen.portrait(outside / "secret.png", 64, 64),
    }
    mediagen.truncated(f["face"], volume / "truncated.png", keep=0.3)
    mediagen.truncated(f["speech"], volume / "header_only.wav", size=20)
    mediagen.truncated(f["clip"], volume / "cut.mp4", keep=0.5)
    (volume / "empty.wav").write_bytes(b"")
    for link, target in (("escape.png", f["secret"]), ("escape_dir", outside)):
        if not (volume / link).is_symlink():
            (volume / link).symlink_to(target)
    return f


def bad_inputs(root: Path) -> list[Case]:
    f = make_battery_files(root)
    volume = Path(root) / "volume"
    v = f"{volume}/"
    video = {"input_type": "video"}
    multi = {"person_count": "multi"}
    noise_b64 = _b64(f["noise"])
    return [
        # the job input itself
        ("input is a list", ["image_path", "wav_path"], "input"),
        # workflow enums
        ("input_type unknown", {"input_type": "audio"}, "input_type"),
        ("input_type number", {"input_type": 2}, "input_type"),
        ("person_count unknown", {"person_count": "three"}, "person_count"),
        ("person_count list", {"person_count": ["single"]}, "person_count"),
        ("multi_audio_type unknown", {**multi, "multi_audio_type": "both"}, "multi_audio_type"),
        ("speaker_layout unknown", {**multi, "speaker_layout": "top_bottom"}, "speaker_layout"),
        # one source per medium
        ("two image sources", {"image_url": "https://example.com/a.png",
                               "image_base64": _b64(f["face"])}, "image_url"),
        ("two audio sources", {"wav_path": f"{v}speech.wav",
                               "wav_url": "https://example.com/a.wav"}, "wav_path"),
        ("two speaker-2 sources", {**multi, "wav_path_2": f"{v}speech.wav",
                                   "wav_base64_2": _b64(f["speech"])}, "wav_path_2"),
        ("two video sources", {**video, "video_path": f"{v}clip.mp4",
                               "video_url": "https://example.com/v.mp4"}, "video_path"),
        # wrong types for sources
        ("image_path number", {"image_path": 42}, "image_path"),
        ("wav_url object", {"wav_url": {"href": "https://example.com/a.wav"}}, "wav_url"),
        ("wav_path is a URL", {"wav_path": "https://example.com/a.wav"}, "wav_path"),
        # base64
        ("broken base64", {"image_base64": "this is not base64!"}, "image_base64"),
        ("broken base64 in data URI", {"image_base64": "data:image/png;base64,@@@@"},
         "image_base64"),
        ("data URI not base64", {"image_base64": "data:image/png,rawbytes"}, "image_base64"),
        ("base64 of one character", {"wav_base64": "A"}, "wav_base64"),
        ("audio bytes as image", {"image_base64": _b64(f["speech"])}, "image_base64"),
        ("image bytes as audio", {"wav_base64": "data:audio/wav;base64," + _b64(f["face"])},
         "wav_base64"),
        ("oversize base64 audio", {"wav_base64": noise_b64}, "wav_base64"),
        ("oversize data URI image", {"image_base64": "data:image/png;base64," + noise_b64},
         "image_base64"),
        # files that are not what their field says, empty or corrupt
        ("audio file as image", {"image_path": f"{v}speech.wav"}, "image_path"),
        ("truncated PNG", {"image_path": f"{v}truncated.png"}, "image_path"),
        ("8x8 image", {"image_path": f"{v}tiny.png"}, "image_path"),
        ("empty audio file", {"wav_path": f"{v}empty.wav"}, "wav_path"),
        ("WAV without samples", {"wav_path": f"{v}silent.wav"}, "wav_path"),
        ("WAV cut inside its header", {"wav_path": f"{v}header_only.wav"}, "wav_path"),
        ("image as audio", {"wav_path": f"{v}face.png"}, "wav_path"),
        ("video as audio", {"wav_path": f"{v}clip.mp4"}, "wav_path"),
        ("audio above MAX_AUDIO_S", {"wav_path": f"{v}long.mp3"}, "wav_path"),
        ("speaker 2 corrupt", {**multi, "wav_path_2": f"{v}header_only.wav"}, "wav_path_2"),
        ("image as video", {**video, "video_path": f"{v}face.png"}, "video_path"),
        ("audio-only file as video", {**video, "video_path": f"{v}tone.m4a"}, "video_path"),
        ("truncated MP4", {**video, "video_path": f"{v}cut.mp4"}, "video_path"),
        # paths outside the allowed roots
        ("dot-dot escape", {"image_path": f"{v}../outside/secret.png"}, "image_path"),
        ("relative dot-dot escape", {"wav_path": "../../../../etc/passwd"}, "wav_path"),
        ("absolute path outside", {"image_path": "/etc/passwd"}, "image_path"),
        ("symlink out of the volume", {"image_path": f"{v}escape.png"}, "image_path"),
        ("symlinked folder out of the volume", {"image_path": f"{v}escape_dir/secret.png"},
         "image_path"),
        ("missing file", {"image_path": f"{v}nobody.png"}, "image_path"),
        ("folder instead of file", {"wav_path": str(volume)}, "wav_path"),
        ("speaker 2 missing file", {**multi, "wav_path_2": f"{v}nobody.wav"}, "wav_path_2"),
        # URLs: schemes and addresses refused before any connection
        ("file URL", {"image_url": "file:///etc/passwd"}, "image_url"),
        ("ftp URL", {"wav_url": "ftp://example.com/a.wav"}, "wav_url"),
        ("gopher URL", {"image_url": "gopher://127.0.0.1:70/_x"}, "image_url"),
        ("data URI as URL", {"image_url": "data:image/png;base64,AAAA"}, "image_url"),
        ("URL without host", {"image_url": "http:///a.png"}, "image_url"),
        ("loopback URL", {"wav_url": "http://127.0.0.1:9/a.wav"}, "wav_url"),
        ("localhost URL", {"image_url": "http://localhost:9/a.png"}, "image_url"),
        ("IPv6 loopback URL", {"image_url": "http://[::1]:9/a.png"}, "image_url"),
        ("metadata URL", {"image_url": "http://169.254.169.254/latest/meta-data/"},
         "image_url"),
        ("private 10/8 URL", {"image_url": "http://10.0.0.5/a.png"}, "image_url"),
        ("private 192.168 URL", {"wav_url": "https://192.168.1.1/a.wav"}, "wav_url"),
        ("carrier-grade NAT URL", {"image_url": "http://100.64.0.1/a.png"}, "image_url"),
        ("unspecified address URL", {**video, "video_url": "http://0.0.0.0:9/v.mp4"},
         "video_url"),
        ("IPv4-mapped IPv6 private URL", {"image_url": "http://[::ffff:10.0.0.1]/a.png"},
         "image_url"),
        # sizes and numbers
        ("giant width", {"width": 4096}, "width"),
        ("giant height", {"height": 100000.0}, "height"),
        ("tiny width", {"width": 100}, "width"),
        ("negative height", {"height": -512}, "height"),
        ("width as text", {"width": "wide"}, "width"),
        ("width as boolean", {"width": True}, "width"),
        ("negative max_frame", {"max_frame": -5}, "max_frame"),
        ("zero max_frame", {"max_frame": 0}, "max_frame"),
        ("fractional max_frame", {"max_frame": 10.5}, "max_frame"),
        ("max_frame above MAX_FRAMES", {"max_frame": 10**9}, "max_frame"),
        ("max_frame as text", {"max_frame": "100"}, "max_frame"),
        ("negative seed", {"seed": -7}, "seed"),
        ("seed above 2**63-1", {"seed": 2**64}, "seed"),
        ("zero steps", {"steps": 0}, "steps"),
        ("too many steps", {"steps": 500}, "steps"),
        ("negative cfg", {"cfg": -1}, "cfg"),
        ("huge audio_scale", {"audio_scale": 1000}, "audio_scale"),
        ("audio needs more than MAX_FRAMES", {"wav_path": f"{v}medium.mp3"}, "wav_path"),
        # booleans and text
        ("force_offload as text", {"force_offload": "yes"}, "force_offload"),
        ("network_volume as number", {"network_volume": 2}, "network_volume"),
        ("long_form as text", {"long_form": "auto"}, "long_form"),
        ("prompt as number", {"prompt": 123}, "prompt"),
        ("negative_prompt as list", {"negative_prompt": ["blurry"]}, "negative_prompt"),
        ("prompt too long", {"prompt": "talk " * 3000}, "prompt"),
        # speakers
        ("speaker box with three numbers", {**multi, "speaker_boxes": [[0, 0, 1], [0, 0, 1, 1]]},
         "speaker_boxes"),
        ("speaker box inverted", {**multi, "speaker_boxes": [[0.6, 0, 0.4, 1], [0, 0, 0.5, 1]]},
         "speaker_boxes"),
        ("speaker box outside the frame", {**multi, "speaker_boxes": [[0, 0, 2, 1],
                                                                     [0, 0, 0.5, 1]]},
         "speaker_boxes"),
        ("speaker layout and boxes", {**multi, "speaker_layout": "left_right",
                                      "speaker_boxes": [[0, 0, 0.5, 1], [0.5, 0, 1, 1]]},
         "speaker_layout"),
    ]
