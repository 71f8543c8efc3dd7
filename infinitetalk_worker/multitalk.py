"""The input and output shape of the earlier MultiTalk RunPod worker (API.md §4).

Clients written for that worker send `image_path` (a path, URL or base64 — it never said which),
`audio_paths: {"person1": ..., "person2": ...}` and `sample_*` knobs, and read back
`{"status": "success", "video_base64": ..., "filename": ...}`. This module only translates:
`to_job_input` turns such an input into the §1 shape, so the RunPod handler validates and runs it
exactly like any other job, and `shape_result` turns the §1 result back into the MultiTalk shape.
Errors stay `{"error": ...}`, with the field named the way the MultiTalk caller named it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlparse

from .delivery import safe_name
from .errors import InputError

# Fields only the MultiTalk shape has: any of them marks a job as MultiTalk-shaped.
MULTITALK_FIELDS = (
    "audio_paths",
    "audio_type",
    "sample_text_guide_scale",
    "sample_audio_guide_scale",
    "sample_steps",
    "mode",
)

# MultiTalk field -> the §1 field it becomes.
_RENAMED = {
    "audio_type": "multi_audio_type",
    "sample_text_guide_scale": "cfg",
    "sample_audio_guide_scale": "audio_scale",
    "sample_steps": "steps",
}
_SPEAKERS = ("person1", "person2")
_MODES = ("streaming", "clip")
# "clip" is MultiTalk's single-clip mode: one 81-frame window instead of the whole audio.
_CLIP_FRAMES = 81

# §1 fields that a MultiTalk-shaped job gives under its own names; accepting both would make it
# unclear which one counts, and would make error messages name a field the caller never sent.
_SECTION1_TWINS = {
    "image_url": "image_path",
    "image_base64": "image_path",
    "wav_path": "audio_paths",
    "wav_url": "audio_paths",
    "wav_base64": "audio_paths",
    "wav_path_2": "audio_paths",
    "wav_url_2": "audio_paths",
    "wav_base64_2": "audio_paths",
    "multi_audio_type": "audio_type",
    "cfg": "sample_text_guide_scale",
    "audio_scale": "sample_audio_guide_scale",
    "steps": "sample_steps",
}

# §1 field named in an error -> the MultiTalk field the caller sent.
_ERROR_FIELDS = {
    "image_path": "image_path",
    "image_url": "image_path",
    "image_base64": "image_path",
    "wav_path": "audio_paths.person1",
    "wav_url": "audio_paths.person1",
    "wav_base64": "audio_paths.person1",
    "wav_path_2": "audio_paths.person2",
    "wav_url_2": "audio_paths.person2",
    "wav_base64_2": "audio_paths.person2",
    **{section1: multitalk for multitalk, section1 in _RENAMED.items()},
}

_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
# Shorter strings are file names, not media: a real image or speech clip is far longer.
_MIN_BASE64_CHARS = 256


def source_kind(value: str) -> str:
    """Which §1 source a free-form media string is: "url", "base64" or "path".

    Any `scheme://` counts as a URL so that the request parser refuses non-HTTP schemes with its
    own message; data URIs and long base64 text are base64; everything else is a path.
    """
    text = value.strip()
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return "url"
    if text[:5].lower() == "data:":
        return "base64"
    if len(text) >= _MIN_BASE64_CHARS and _BASE64_TEXT.fullmatch(text):
        return "base64"
    return "path"


def is_multitalk(job_input: dict) -> bool:
    """True when the job uses the MultiTalk input shape (API.md §4)."""
    return any(name in job_input for name in MULTITALK_FIELDS)


def to_job_input(job_input: dict) -> dict:
    """The §1 job input that a MultiTalk-shaped input means; raises InputError on a mix of shapes."""
    for section1, multitalk in _SECTION1_TWINS.items():
        if section1 in job_input:
            raise InputError(
                section1,
                f"not part of the MultiTalk input shape; give it as {multitalk} "
                "(or send a plain job without MultiTalk fields)",
            )
    if job_input.get("input_type", "image") != "image":
        raise InputError("input_type", "the MultiTalk input shape animates an image; send a plain job for video")
    # person_count follows from audio_paths, whatever the caller said.
    dropped = (*MULTITALK_FIELDS, "image_path", "person_count")
    out = {k: v for k, v in job_input.items() if k not in dropped}
    out["input_type"] = "image"

    image = job_input.get("image_path")
    if image is not None and image != "":
        if not isinstance(image, str):
            raise InputError("image_path", "must be a path, an http(s) URL or base64 text")
        out[f"image_{source_kind(image)}"] = image

    out.update(_audio_fields(job_input.get("audio_paths")))

    for multitalk, section1 in _RENAMED.items():
        if job_input.get(multitalk) is not None:
            out[section1] = job_input[multitalk]

    mode = job_input.get("mode")
    if mode is not None:
        if mode not in _MODES:
            raise InputError("mode", f"{mode!r} is not one of {', '.join(_MODES)}")
        if mode == "clip" and out.get("max_frame") is None:
            out["max_frame"] = _CLIP_FRAMES
    return out


def _audio_fields(audio_paths: object) -> dict:
    if audio_paths is None:
        return {"person_count": "single"}
    if not isinstance(audio_paths, dict):
        raise InputError("audio_paths", 'must be an object like {"person1": "<path, URL or base64>"}')
    unknown = sorted(set(audio_paths) - set(_SPEAKERS))
    if unknown:
        raise InputError("audio_paths", f"unknown key {unknown[0]!r}; use person1 and person2")
    given = {k: v for k, v in audio_paths.items() if v not in (None, "")}
    for key, value in given.items():
        if not isinstance(value, str):
            raise InputError(f"audio_paths.{key}", "must be a path, an http(s) URL or base64 text")
    if "person2" in given and "person1" not in given:
        raise InputError("audio_paths", "person2 is given without person1; person1 speaks first")
    out: dict = {"person_count": "multi" if "person2" in given else "single"}
    if "person1" in given:
        out[f"wav_{source_kind(given['person1'])}"] = given["person1"]
    if "person2" in given:
        out[f"wav_{source_kind(given['person2'])}_2"] = given["person2"]
    return out


def shape_result(result: dict, job_id: str) -> dict:
    """The MultiTalk answer for a §2 result; an error stays {"error": ...} in MultiTalk's names."""
    if "error" in result:
        return {**result, "error": _rename_error(str(result["error"]))}
    shaped: dict = {"status": "success"}
    if "video" in result:
        shaped["video_base64"] = result["video"]
        shaped["filename"] = f"infinitetalk-{safe_name(job_id)}.mp4"
    elif "video_url" in result:
        shaped["video_url"] = result["video_url"]
        shaped["filename"] = PurePosixPath(urlparse(result["video_url"]).path).name
    elif "video_path" in result:
        shaped["video_path"] = result["video_path"]
        shaped["filename"] = PurePosixPath(result["video_path"]).name
    metadata = {k: v for k, v in result.items() if k not in ("video", "video_url", "video_path")}
    return {**shaped, **metadata}


def _rename_error(message: str) -> str:
    field, sep, problem = message.partition(": ")
    if sep and field in _ERROR_FIELDS:
        return f"{_ERROR_FIELDS[field]}: {problem}"
    return message
