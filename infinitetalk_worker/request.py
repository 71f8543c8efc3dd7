"""The job input of API.md §1, parsed and validated before anything else happens.

`parse_request(job_input, settings)` turns the dict a client sent into a `Request` with every
field typed and every default applied, or raises `InputError` naming the field and the fix.
`input_type` and `person_count` pick the workflow first, so that the media fields the workflow
does not use are ignored rather than checked (Engui Studio sends `image_path` and `video_path`
together, and `wav_path_2` with `single`). Fields this page does not know are ignored: clients
send extras.

Each input field is declared once, in `FIELDS`; the parser reads its bounds and defaults from
there and `input_schema()` turns the same declarations into the JSON Schema shipped as
`schema/input.schema.json` (`python -m infinitetalk_worker.request --schema`).

Rules and bounds (besides the enums):
- `null` means "not given" for every field; so does an empty string for a choice or a medium.
- Media: at most one of `*_path`, `*_url`, `*_base64` per medium. Paths are strings; relative
  paths are taken inside the network volume (the folder confinement is checked in `media`).
  URLs are `http`/`https` with a host. Base64 is raw (standard or URL-safe alphabet, padding
  optional) or a `data:<type>;base64,` URI, at most `MAX_BASE64_MB` decoded.
- `prompt`: empty or missing means "A person talking naturally"; at most 10000 characters,
  as is `negative_prompt` (missing: the negative prompt of kijai's example workflows; an empty
  string means none).
- `width`, `height`: numbers (floats accepted) from 256 to 1280, snapped to the nearest
  multiple of 16; `null` means 512.
- `max_frame`: a whole number from 1 to `MAX_FRAMES` (floats like 81.0 accepted); missing
  means "as long as the audio".
- `seed`: a whole number from 0 to 2**63-1; missing, `null` or -1 (ComfyUI's "random") draws
  one from 0..2**32-1 so that every client (JavaScript included) can echo it back exactly.
- `steps` 1..50 (default 6), `cfg` 0..20 (default 1.0), `audio_scale` 0..10 (default 1.0): the
  defaults are those of the lightx2v-distilled InfiniteTalk workflows.
- `multi_audio_type`: "para" (default) or "add".
- `speaker_layout`: "left_right" (default: speaker 1 is the left half of the frame) or
  "right_left"; or `speaker_boxes`: two boxes `[x0, y0, x1, y1]` as fractions of the frame
  (0..1, x0 < x1, y0 < y1), speaker 1 first. Giving both is an error.
- Booleans are JSON booleans: `force_offload` (default true), `network_volume` (default
  false), `long_form` (default null: automatic).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sys
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from .errors import InputError, redact
from .settings import MiB, Settings

DEFAULT_PROMPT = "A person talking naturally"
# The negative prompt of kijai's example InfiniteTalk workflows.
DEFAULT_NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, "
    "images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people "
    "in the background, walking backwards"
)
SIZE_GRID = 16
MAX_TEXT_CHARS = 10_000
MAX_SEED = 2**63 - 1
RANDOM_SEED_BOUND = 2**32

# medium -> its three source fields; the order is the order errors name them in.
MEDIA_FIELDS: dict[str, tuple[str, str, str]] = {
    "image": ("image_path", "image_url", "image_base64"),
    "video": ("video_path", "video_url", "video_base64"),
    "audio": ("wav_path", "wav_url", "wav_base64"),
    "audio_2": ("wav_path_2", "wav_url_2", "wav_base64_2"),
}
MEDIUM_WORDS = {
    "image": "the portrait image (input_type image)",
    "video": "the source video (input_type video)",
    "audio": "the speech audio of speaker 1",
    "audio_2": "the speech audio of speaker 2 (person_count multi)",
}


@dataclass(frozen=True)
class MediaSource:
    field: str  # the input field it came from: "image_path", "wav_base64_2", ...
    kind: str  # "path" | "url" | "base64"
    value: str  # path, URL, or the base64 payload alone (no data: prefix, no whitespace)

    def __repr__(self) -> str:
        if self.kind == "base64":
            shown = f"<{len(self.value)} base64 characters>"
        else:
            shown = repr(redact(self.value))  # signed URLs carry tokens
        return f"MediaSource(field={self.field!r}, kind={self.kind!r}, value={shown})"


@dataclass(frozen=True)
class SpeakerBox:
    """A speaker's face region, as fractions of the frame (0..1)."""

    x0: float
    y0: float
    x1: float
    y1: float


LAYOUTS: dict[str, tuple[SpeakerBox, SpeakerBox]] = {
    "left_right": (SpeakerBox(0.0, 0.0, 0.5, 1.0), SpeakerBox(0.5, 0.0, 1.0, 1.0)),
    "right_left": (SpeakerBox(0.5, 0.0, 1.0, 1.0), SpeakerBox(0.0, 0.0, 0.5, 1.0)),
}


@dataclass(frozen=True)
class Request:
    input_type: str  # "image" | "video"
    person_count: str  # "single" | "multi"
    image: MediaSource | None  # None: the bundled example (I2V only)
    video: MediaSource | None  # None: the bundled example (V2V only)
    audio: MediaSource | None  # speaker 1; None: the bundled example speech
    audio_2: MediaSource | None  # speaker 2 (multi only); None: the same audio as speaker 1
    prompt: str
    negative_prompt: str
    width: int
    height: int
    max_frame: int | None  # None: from the audio
    force_offload: bool
    network_volume: bool
    seed: int
    steps: int
    cfg: float
    audio_scale: float
    multi_audio_type: str  # "para" | "add"
    speaker_boxes: tuple[SpeakerBox, SpeakerBox]  # speaker 1, speaker 2
    long_form: bool | None  # None: automatic

    @property
    def workflow(self) -> str:
        kind = "I2V" if self.input_type == "image" else "V2V"
        return f"{kind}_{self.person_count}"


# --- the field declarations: the parser and the JSON Schema both read these -------------------


@dataclass(frozen=True)
class InputField:
    name: str
    kind: str  # "choice" | "source" | "text" | "size" | "int" | "number" | "bool" | "boxes"
    doc: str
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None  # None for max_frame: the MAX_FRAMES setting decides


def _source_fields() -> list[InputField]:
    fields = []
    for medium, names in MEDIA_FIELDS.items():
        what = MEDIUM_WORDS[medium]
        fields += [
            InputField(names[0], "source", f"{what}: a file on the worker, normally on the "
                       "network volume (/runpod-volume/...); give at most one source"),
            InputField(names[1], "source", f"{what}: an http(s) URL to download"),
            InputField(names[2], "source", f"{what}: base64 or a data: URI"),
        ]
    return fields


FIELDS: tuple[InputField, ...] = (
    InputField("input_type", "choice", "image-to-video or video-to-video (lip-sync dubbing)",
               "image", ("image", "video")),
    InputField("person_count", "choice", "one speaker, or two speakers with two audio tracks",
               "single", ("single", "multi")),
    *_source_fields(),
    InputField("prompt", "text", "scene description; empty or missing means the default",
               DEFAULT_PROMPT),
    InputField("negative_prompt", "text", "what the video should not show; an empty string "
               "means none", DEFAULT_NEGATIVE_PROMPT),
    InputField("width", "size", "output width in pixels, snapped to a multiple of 16",
               512, minimum=256, maximum=1280),
    InputField("height", "size", "output height in pixels, snapped to a multiple of 16",
               512, minimum=256, maximum=1280),
    InputField("max_frame", "int", "total frames (at most the MAX_FRAMES setting, 15000 by "
               "default); missing means as long as the (longest) audio", None, minimum=1),
    InputField("force_offload", "bool", "offload model parts to CPU between steps; false is "
               "about 1.5x faster on GPUs with 48 GB or more", True),
    InputField("network_volume", "bool", "write the result to the network volume and return "
               "its path instead of base64", False),
    InputField("seed", "int", "sampler seed; missing or -1 means random (echoed back in the "
               "result)", None, minimum=-1, maximum=MAX_SEED),
    InputField("steps", "int", "sampling steps", 6, minimum=1, maximum=50),
    InputField("cfg", "number", "classifier-free guidance scale", 1.0, minimum=0, maximum=20),
    InputField("audio_scale", "number", "strength of the audio conditioning", 1.0,
               minimum=0, maximum=10),
    InputField("multi_audio_type", "choice", "two speakers: 'para' speak at once (each track "
               "from the start), 'add' speaker 2 after speaker 1", "para", ("para", "add")),
    InputField("speaker_layout", "choice", "two speakers: which half of the frame holds "
               "speaker 1's face", "left_right", tuple(LAYOUTS)),
    InputField("speaker_boxes", "boxes", "two speakers: [[x0, y0, x1, y1], [x0, y0, x1, y1]], "
               "the face regions of speaker 1 and speaker 2 as fractions of the frame "
               "(instead of speaker_layout)"),
    InputField("long_form", "bool", "stream frames to disk window by window; null means "
               "automatic (audio longer than LONGFORM_THRESHOLD_S)", None),
)
_BY_NAME = {f.name: f for f in FIELDS}


# --- parsing ------------------------------------------------------------------------------------


def parse_request(job_input: dict, settings: Settings) -> Request:
    """Validate a §1 job input and apply the defaults; raises `InputError` naming the field."""
    if not isinstance(job_input, dict):
        raise InputError("input", "must be a JSON object with the job's fields")
    get = job_input.get
    input_type = _choice(_BY_NAME["input_type"], get("input_type"))
    person_count = _choice(_BY_NAME["person_count"], get("person_count"))
    multi = person_count == "multi"

    sources = {
        "image": _media(job_input, "image", settings) if input_type == "image" else None,
        "video": _media(job_input, "video", settings) if input_type == "video" else None,
        "audio": _media(job_input, "audio", settings),
        "audio_2": _media(job_input, "audio_2", settings) if multi else None,
    }
    max_frame = _integer(_BY_NAME["max_frame"], get("max_frame"), maximum=settings.max_frames,
                         maximum_hint=" (MAX_FRAMES)")
    return Request(
        input_type=input_type,
        person_count=person_count,
        **sources,
        prompt=_text(_BY_NAME["prompt"], get("prompt"), empty_is_default=True),
        negative_prompt=_text(_BY_NAME["negative_prompt"], get("negative_prompt"),
                              empty_is_default=False),
        width=_size(_BY_NAME["width"], get("width")),
        height=_size(_BY_NAME["height"], get("height")),
        max_frame=max_frame,
        force_offload=_boolean(_BY_NAME["force_offload"], get("force_offload")),
        network_volume=_boolean(_BY_NAME["network_volume"], get("network_volume")),
        seed=_seed(get("seed")),
        steps=_integer(_BY_NAME["steps"], get("steps")),
        cfg=_number(_BY_NAME["cfg"], get("cfg")),
        audio_scale=_number(_BY_NAME["audio_scale"], get("audio_scale")),
        multi_audio_type=_choice(_BY_NAME["multi_audio_type"], get("multi_audio_type")),
        speaker_boxes=_speakers(get("speaker_layout"), get("speaker_boxes")),
        long_form=_boolean(_BY_NAME["long_form"], get("long_form")),
    )


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _choice(spec: InputField, value: Any) -> str:
    allowed = " or ".join(f'"{c}"' for c in spec.choices)
    if value is None or (isinstance(value, str) and not value.strip()):
        return spec.default
    if not isinstance(value, str):
        raise InputError(spec.name, f"must be {allowed}, not {_kind_of(value)}")
    normal = value.strip().lower()
    if normal not in spec.choices:
        raise InputError(spec.name, f"{_quote(value)} is not one of {allowed}")
    return normal


def _text(spec: InputField, value: Any, *, empty_is_default: bool) -> str:
    if value is None:
        return spec.default
    if not isinstance(value, str):
        raise InputError(spec.name, f"must be a string, not {_kind_of(value)}")
    if empty_is_default and not value.strip():
        return spec.default
    if len(value) > MAX_TEXT_CHARS:
        raise InputError(spec.name, f"is {len(value)} characters long; the maximum is "
                                    f"{MAX_TEXT_CHARS}")
    return value.strip()


def _finite_number(spec: InputField, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(spec.name, f"must be a number, not {_kind_of(value)}")
    if not math.isfinite(value):
        raise InputError(spec.name, f"must be a finite number, not {value}")
    return value


def _in_bounds(spec: InputField, value: float, maximum: float | None = None,
               maximum_hint: str = "") -> None:
    maximum = spec.maximum if maximum is None else maximum
    if spec.minimum is not None and value < spec.minimum:
        raise InputError(spec.name, f"{_num(value)} is below the minimum {_num(spec.minimum)}")
    if maximum is not None and value > maximum:
        raise InputError(spec.name, f"{_num(value)} is above the maximum {_num(maximum)}"
                                    f"{maximum_hint}")


def _number(spec: InputField, value: Any) -> float:
    if value is None:
        return float(spec.default)
    number = float(_finite_number(spec, value))
    _in_bounds(spec, number)
    return number


def _integer(spec: InputField, value: Any, *, maximum: float | None = None,
             maximum_hint: str = "") -> int | None:
    if value is None:
        return spec.default
    number = _finite_number(spec, value)
    if isinstance(number, float):
        if not number.is_integer():
            raise InputError(spec.name, f"must be a whole number, not {number}")
        number = int(number)
    _in_bounds(spec, number, maximum, maximum_hint)
    return number


def _seed(value: Any) -> int:
    spec = _BY_NAME["seed"]
    try:
        seed = _integer(spec, value)
    except InputError:
        raise InputError(spec.name, f"must be a whole number from 0 to {MAX_SEED}, or -1 for a "
                                    f"random seed, not {_quote(value)}") from None
    if seed is None or seed == -1:
        return secrets.randbelow(RANDOM_SEED_BOUND)
    return seed


def _size(spec: InputField, value: Any) -> int:
    if value is None:
        return spec.default
    number = _finite_number(spec, value)
    _in_bounds(spec, number)
    # Bounds are multiples of the grid, so the snapped value stays inside them.
    return int(round(number / SIZE_GRID)) * SIZE_GRID


def _boolean(spec: InputField, value: Any) -> bool | None:
    if value is None:
        return spec.default
    if not isinstance(value, bool):
        raise InputError(spec.name, f"must be true or false, not {_kind_of(value)} "
                                    f"{_quote(value)}")
    return value


def _speakers(layout: Any, boxes: Any) -> tuple[SpeakerBox, SpeakerBox]:
    spec = _BY_NAME["speaker_boxes"]
    if boxes is None:
        return LAYOUTS[_choice(_BY_NAME["speaker_layout"], layout)]
    if layout is not None and layout != "":
        raise InputError("speaker_layout", "give either speaker_layout or speaker_boxes, "
                                           "not both")
    if not isinstance(boxes, list) or len(boxes) != 2:
        raise InputError(spec.name, "must be a list of two boxes [x0, y0, x1, y1], speaker 1 "
                                    "first")
    parsed = []
    for i, box in enumerate(boxes, start=1):
        if (not isinstance(box, list) or len(box) != 4
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box)):
            raise InputError(spec.name, f"box {i} must be four numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
            raise InputError(spec.name, f"box {i} must hold fractions of the frame between 0 "
                                        "and 1")
        if not (x0 < x1 and y0 < y1):
            raise InputError(spec.name, f"box {i} must have x0 < x1 and y0 < y1")
        parsed.append(SpeakerBox(x0, y0, x1, y1))
    return parsed[0], parsed[1]


# --- media sources ------------------------------------------------------------------------------

_DATA_URI = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)
_BASE64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*")


def _media(job_input: dict, medium: str, settings: Settings) -> MediaSource | None:
    given = []
    for name in MEDIA_FIELDS[medium]:
        value = job_input.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(name, f"must be a string, not {_kind_of(value)}")
        if value.strip():
            given.append((name, value))
    if not given:
        return None
    if len(given) > 1:
        names = " and ".join(n for n, _ in given)
        raise InputError(given[0][0], f"give only one source for {MEDIUM_WORDS[medium]}, "
                                      f"not {names}")
    name, value = given[0]
    parse: Callable[[str, str, Settings], MediaSource] = {
        "path": _path_source, "url": _url_source, "base64": _base64_source,
    }[_source_kind(name)]
    return parse(name, value, settings)


def _source_kind(name: str) -> str:
    return name.split("_")[1]  # image_path -> path, wav_url_2 -> url


def _path_source(name: str, value: str, settings: Settings) -> MediaSource:
    value = value.strip()
    lowered = value.lower()
    if lowered.startswith(("http://", "https://")):
        raise InputError(name, f"looks like a URL; send it as {name.replace('_path', '_url')}")
    if lowered.startswith("data:"):
        twin = name.replace("_path", "_base64")
        raise InputError(name, f"looks like a data URI; send it as {twin}")
    if "\x00" in value:
        raise InputError(name, "contains a NUL character")
    return MediaSource(name, "path", value)


def _url_source(name: str, value: str, settings: Settings) -> MediaSource:
    value = value.strip()
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        hint = ""
        if scheme == "data":
            hint = f"; send data URIs as {name.replace('_url', '_base64')}"
        elif scheme == "file" or not scheme:
            hint = f"; send files on the worker as {name.replace('_url', '_path')}"
        shown = f"{scheme}:" if scheme else "no scheme"
        raise InputError(name, f"only http and https URLs are downloaded, not {shown}{hint}")
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InputError(name, "is not a valid URL") from None
    if not host:
        raise InputError(name, "has no host name")
    return MediaSource(name, "url", value)


def _base64_source(name: str, value: str, settings: Settings) -> MediaSource:
    payload = value.strip()
    if payload[:5].lower() == "data:":
        match = _DATA_URI.match(payload)
        if not match:
            raise InputError(name, "is a data URI without a comma before the data")
        params = [p.strip().lower() for p in match.group(2).split(";") if p.strip()]
        if "base64" not in params:
            raise InputError(name, "is a data URI that is not base64-encoded; use "
                                   "data:<type>;base64,<data>")
        payload = payload[match.end():]
    payload = "".join(payload.split())  # str.split: ~25x faster than a regex on megabytes
    cap = settings.max_base64_mb * MiB
    decoded_size = len(payload) * 3 // 4
    if decoded_size > cap:
        raise InputError(name, f"is about {decoded_size / MiB:.1f} MB decoded, above the "
                               f"{settings.max_base64_mb} MB limit (MAX_BASE64_MB); send a URL "
                               "or a network-volume path instead")
    body = payload.rstrip("=")
    if not body:
        raise InputError(name, "is empty")
    if len(payload) - len(body) > 2 or not _BASE64_CHARS.fullmatch(body) or len(body) % 4 == 1:
        raise InputError(name, "is not valid base64")
    return MediaSource(name, "base64", payload)


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _quote(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


# --- the JSON Schema ----------------------------------------------------------------------------


def input_schema() -> dict:
    """JSON Schema (draft 2020-12) of the job input, made from `FIELDS`."""
    properties: dict[str, dict] = {}
    for spec in FIELDS:
        prop: dict[str, Any] = {"description": spec.doc}
        if spec.kind == "choice":
            prop.update(type=["string", "null"], enum=[*spec.choices, None])
        elif spec.kind in ("source", "text"):
            prop["type"] = ["string", "null"]
            if spec.kind == "text":
                prop["maxLength"] = MAX_TEXT_CHARS
        elif spec.kind in ("size", "number"):
            prop["type"] = ["number", "null"]
        elif spec.kind == "int":
            # Whole numbers written as floats (81.0) are accepted too.
            prop["type"] = ["integer", "number", "null"]
            prop["multipleOf"] = 1
        elif spec.kind == "bool":
            prop["type"] = ["boolean", "null"]
        elif spec.kind == "boxes":
            box = {"type": "array", "minItems": 4, "maxItems": 4,
                   "items": {"type": "number", "minimum": 0, "maximum": 1}}
            prop.update(type=["array", "null"], minItems=2, maxItems=2, items=box)
        if spec.minimum is not None:
            prop["minimum"] = spec.minimum
        if spec.maximum is not None:
            prop["maximum"] = spec.maximum
        if spec.default is not None:
            prop["default"] = spec.default
        properties[spec.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "InfiniteTalk worker job input",
        "description": "The `input` object of a RunPod job (API.md section 1). Give at most one "
                       "source per medium; fields of a medium the workflow does not use are "
                       "ignored, and so are unknown fields.",
        "type": "object",
        "properties": properties,
        "additionalProperties": True,
    }


def _main(argv: list[str]) -> int:
    if argv != ["--schema"]:
        print("usage: python -m infinitetalk_worker.request --schema > schema/input.schema.json",
              file=sys.stderr)
        return 2
    print(json.dumps(input_schema(), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
