"""A LightX2V task request, translated into the §1 job input that the pipeline runs.

The service never validates a field itself: it builds the §1 dict and hands it to
`request.parse_request`, the same parser the RunPod handler uses, and renames the field in any
error back to the LightX2V name the caller sent (`steps` -> `infer_steps`, ...).

    image_path           -> image_* (an image) or video_* with input_type video (a video clip);
                            the content decides (magic bytes of base64 and server files, the
                            file extension of a URL)
    audio_path           -> wav_*
    talk_objects         -> two speakers: wav_* / wav_*_2, person_count multi, and each mask's
                            bounding box (white = the speaker's face) as speaker_boxes
    target_shape [h, w]  -> height, width
    infer_steps          -> steps;  text_guide_scale -> cfg;  audio_guide_scale -> audio_scale
    max_frame_num, target_video_length, video_duration (seconds x 25 fps) -> max_frame,
                            the first one given in that order; none: as long as the audio
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..multitalk import source_kind
from ..request import Request, parse_request
from ..settings import Settings
from .schema import IGNORED_FIELDS, VideoTaskRequest

log = logging.getLogger("infinitetalk")

# Frame rate of image-to-video output, which video_duration is counted in.
FPS = 25
MAX_SPEAKERS = 2
_VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
_HEAD_BYTES = 64


def to_job_input(message: VideoTaskRequest, settings: Settings) -> dict:
    """The §1 job input for a LightX2V request (not yet validated: see `parse`)."""
    job: dict = {}
    if message.prompt:
        job["prompt"] = message.prompt
    if message.negative_prompt:
        job["negative_prompt"] = message.negative_prompt
    if message.image_path:
        kind = source_kind(message.image_path)
        medium = condition_medium(message.image_path, kind, settings)
        job["input_type"] = medium
        job[f"{medium}_{kind}"] = message.image_path
    job.update(_speakers(message, settings))
    if message.target_shape is not None:
        if len(message.target_shape) != 2:
            raise InputError("target_shape", "must be [height, width]")
        job["height"], job["width"] = message.target_shape
    for lightx2v, section1 in (("seed", "seed"), ("infer_steps", "steps"),
                               ("text_guide_scale", "cfg"), ("audio_guide_scale", "audio_scale")):
        if getattr(message, lightx2v) is not None:
            job[section1] = getattr(message, lightx2v)
    frames = _frames(message)
    if frames is not None:
        job["max_frame"] = frames
    ignored = [name for name in IGNORED_FIELDS if getattr(message, name) is not None]
    if ignored:
        log.info("lightx2v request: %s accepted but has no effect here", ", ".join(ignored))
    return job


def parse(message: VideoTaskRequest, settings: Settings) -> tuple[dict, dict, Request]:
    """Translate and validate: (§1 job input, §1 field -> LightX2V field, request).

    Errors name the LightX2V field; the field map lets the task name it too when media checks
    fail later, at run time. The job input pins the seed.
    """
    job = to_job_input(message, settings)
    names = {field: _lightx2v_field(field, message) for field in (*job, "max_frame", "width", "height")}
    names = {k: v for k, v in names.items() if k != v}
    try:
        request = parse_request(job, settings)
    except InputError as e:
        raise renamed(e, names) from None
    # Drawn once: the task runs (maybe after a restart) with the seed it was created with.
    job["seed"] = request.seed
    return job, names, request


def renamed(error: InputError, names: dict) -> InputError:
    """The same error, naming the field the LightX2V caller sent."""
    problem = error.message.partition(": ")[2] or error.message
    return InputError(names.get(error.field, error.field), problem)


def _speakers(message: VideoTaskRequest, settings: Settings) -> dict:
    talk = message.talk_objects or []
    if not talk:
        if not message.audio_path:
            return {}
        return {f"wav_{source_kind(message.audio_path)}": message.audio_path}
    if message.audio_path:
        raise InputError("audio_path", "leave it empty when talk_objects gives each speaker's audio")
    if len(talk) > MAX_SPEAKERS:
        raise InputError("talk_objects", f"{len(talk)} speakers given; at most {MAX_SPEAKERS} are supported")
    job: dict = {"person_count": "multi" if len(talk) == 2 else "single"}
    for i, obj in enumerate(talk):
        if not obj.audio:
            raise InputError(f"talk_objects[{i}].audio", "is empty; give the speaker's audio")
        suffix = "_2" if i == 1 else ""
        job[f"wav_{source_kind(obj.audio)}{suffix}"] = obj.audio
    masks = [obj.mask for obj in talk]
    if len(talk) == 2 and any(masks):
        if not all(masks):
            raise InputError("talk_objects", "give a mask for both speakers or for neither")
        job["speaker_boxes"] = [mask_box(m, f"talk_objects[{i}].mask", settings) for i, m in enumerate(masks)]
    return job


def _frames(message: VideoTaskRequest) -> int | None:
    if message.max_frame_num is not None:
        return message.max_frame_num
    if message.target_video_length is not None:
        return message.target_video_length
    if message.video_duration is not None:
        if not math.isfinite(message.video_duration) or message.video_duration <= 0:
            raise InputError("video_duration", f"{message.video_duration:g} is not a positive number of seconds")
        return max(1, round(message.video_duration * FPS))
    return None


def _lightx2v_field(field: str, message: VideoTaskRequest) -> str:
    if field.startswith(("image_", "video_", "input_type")):
        return "image_path"
    if field in ("wav_path", "wav_url", "wav_base64"):
        return "talk_objects[0].audio" if message.talk_objects else "audio_path"
    if field in ("wav_path_2", "wav_url_2", "wav_base64_2"):
        return "talk_objects[1].audio"
    if field in ("width", "height"):
        return "target_shape"
    if field == "speaker_boxes":
        return "talk_objects"
    if field == "max_frame":
        for name in ("max_frame_num", "target_video_length", "video_duration"):
            if getattr(message, name) is not None:
                return name
    renamed = {"steps": "infer_steps", "cfg": "text_guide_scale", "audio_scale": "audio_guide_scale"}
    return renamed.get(field, field)


# --- image or video? ------------------------------------------------------------------------------


def condition_medium(value: str, kind: str, settings: Settings) -> str:
    """"video" when image_path holds a video clip, else "image" (media checks it really is one)."""
    if kind == "url":
        return "video" if PurePosixPath(urlparse(value).path).suffix.lower() in _VIDEO_SUFFIXES else "image"
    if kind == "base64":
        text = value.strip()
        if text[:5].lower() == "data:":
            mime = text[5:].split(";", 1)[0].split(",", 1)[0].lower()
            if mime.startswith(("video/", "image/")):
                return mime.split("/", 1)[0]
            text = text.split(",", 1)[-1]
        return "video" if _is_video(_b64_head(text)) else "image"
    path = _readable_input(value, settings)
    if path is None:
        return "image"
    with path.open("rb") as f:
        return "video" if _is_video(f.read(_HEAD_BYTES)) else "image"


def _is_video(head: bytes) -> bool:
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")  # MP4 / QuickTime
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska / WebM
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def _b64_head(text: str) -> bytes:
    chunk = "".join(text[:4 * (_HEAD_BYTES // 3 + 1) + 64].split())
    chunk = chunk[: len(chunk) // 4 * 4]
    try:
        return base64.b64decode(chunk, altchars=b"-_" if ("-" in chunk or "_" in chunk) else None)
    except (binascii.Error, ValueError):
        return b""


def _readable_input(value: str, settings: Settings) -> Path | None:
    """The file a server path names, if it lies inside the input roots (else media refuses it)."""
    path = Path(value.strip())
    if not path.is_absolute():
        path = settings.volume_dir / path
    try:
        resolved = path.resolve()
    except OSError:
        return None
    for root in settings.input_roots:
        try:
            if resolved.is_relative_to(root.resolve()) and resolved.is_file():
                return resolved
        except OSError:
            continue
    return None


# --- masks -> speaker boxes ---------------------------------------------------------------------


def mask_box(value: str, field: str, settings: Settings) -> list[float]:
    """[x0, y0, x1, y1] (fractions) of the white part of a mask image."""
    data = _mask_bytes(value, field, settings)
    try:
        with Image.open(io.BytesIO(data)) as img:
            gray = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError):
        raise InputError(field, "is not an image (PNG, JPEG or WEBP, white where the speaker's face is)") from None
    ys, xs = np.nonzero(gray > 127)
    if xs.size == 0:
        raise InputError(field, "has no white area; paint the speaker's face white on black")
    h, w = gray.shape
    return [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]


def _mask_bytes(value: str, field: str, settings: Settings) -> bytes:
    kind = source_kind(value)
    cap = settings.max_base64_mb * 1024 * 1024
    if kind == "base64":
        text = value.strip()
        if text[:5].lower() == "data:":
            text = text.split(",", 1)[-1]
        text = "".join(text.split())
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None)
        except (binascii.Error, ValueError):
            raise InputError(field, "is not valid base64") from None
        if len(data) > cap:
            raise InputError(field, f"is above the {settings.max_base64_mb} MB limit (MAX_BASE64_MB)")
        return data
    if kind == "url":
        raise InputError(field, "masks are read from base64 or server paths, not URLs; send it as base64")
    path = _readable_input(value, settings)
    if path is None:
        raise InputError(field, f"no such file inside the folders inputs may be read from ({_roots(settings)})")
    if path.stat().st_size > cap:
        raise InputError(field, f"is above the {settings.max_base64_mb} MB limit (MAX_BASE64_MB)")
    return path.read_bytes()


def _roots(settings: Settings) -> str:
    return ", ".join(str(r) for r in settings.input_roots)
