"""A validated request and its media -> a ready ComfyUI graph (one of four, bound by name).

The graphs are data: workflows/<name>.json in ComfyUI's API format, built from kijai's
InfiniteTalk nodes. Request parameters reach them only through workflows/bindings.json, which
maps each parameter to (node title, input); this module never knows a node id. The old worker
hard-coded node ids in Python and reused them for different nodes across files, which is how a
graph ended up with two video outputs and users got a 3-second clip instead of their video.

Long-form jobs use the same graph with two changes taken from the binding table: the InfiniteTalk
node streams its frames to `frames_dir` window by window, and the video output is replaced by a
node that reports that folder.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError
from .settings import WORKFLOWS_DIR, Settings

WORKFLOW_NAMES = ("I2V_single", "I2V_multi", "V2V_single", "V2V_multi")

# InfiniteTalk samples whole windows: 81 frames, then 72 new ones per window (9 overlap).
FRAME_WINDOW = 81
MOTION_FRAMES = 9
# What MultiTalkWav2VecEmbeds accepts (the fps maximum of its schema); a test compares it with
# the node schema so a node-pack update that changes it is noticed. Its num_frames widget stops
# at 10000, but the graphs feed it from an INTConstant ("Frame count") and ComfyUI range-checks
# only literal values, so the frame limit is the job's setting (MAX_FRAMES), not the widget's.
MAX_FPS = 60.0

# VHS_LoadVideo rounds each side of its load size to a multiple of its downscale ratio: the
# format's `dim[0]` without a VAE (1 for the graphs' format "None"), the VAE's ratio (8) with one.
# The load size is chosen to cover the target under either rounding.
VHS_ROUNDINGS = (1, 8)
LOAD_STEP = 8

MASKS_FOLDER = "speaker_masks"
# The model attends over 2x2 patches of the 8x-downscaled latent: one token per 16x16 pixels.
TOKEN_PIXELS = 16


class BindingError(LookupError):
    """A binding names a node title or parameter the graph does not have: a bug in workflows/."""


@dataclass
class Graph:
    name: str                    # "I2V_single" ...
    prompt: dict[str, dict]      # API-format graph for POST /prompt
    output_node: str             # id of the bound final output node
    windows: int                 # InfiniteTalk windows the run will sample
    frames_dir: Path | None      # long-form: the folder frames are streamed into


@dataclass(frozen=True)
class Target:
    title: str                   # node title (_meta.title)
    input: str                   # input name of that node
    mapping: dict[str, Any] | None = None   # JSON text of the parameter value -> input value

    def value_for(self, value: Any) -> Any:
        if self.mapping is None:
            return value
        key = json.dumps(value)
        if key not in self.mapping:
            raise BindingError(f"{self.title}.{self.input}: no mapping for value {key}")
        return self.mapping[key]


@dataclass(frozen=True)
class Bindings:
    output: str                                   # title of the final output node
    parameters: dict[str, dict[str, list[Target]]]  # workflow -> parameter -> targets
    longform_parameters: dict[str, list[Target]]
    longform_output: dict[str, Any]               # {"title", "class_type", "inputs": {name: [title, index]}}

    def for_workflow(self, workflow: str) -> dict[str, list[Target]]:
        return self.parameters[workflow]


def load_workflow(name: str, workflows_dir: Path = WORKFLOWS_DIR) -> dict[str, dict]:
    if name not in WORKFLOW_NAMES:
        raise BindingError(f"unknown workflow {name!r}; expected one of {', '.join(WORKFLOW_NAMES)}")
    return json.loads((workflows_dir / f"{name}.json").read_text())


def load_bindings(workflows_dir: Path = WORKFLOWS_DIR) -> Bindings:
    raw = json.loads((workflows_dir / "bindings.json").read_text())
    per_workflow: dict[str, dict[str, list[Target]]] = {name: {} for name in WORKFLOW_NAMES}
    for parameter, spec in raw["parameters"].items():
        targets = [_target(t) for t in spec["targets"]]
        for workflow in spec.get("workflows", WORKFLOW_NAMES):
            per_workflow[workflow][parameter] = targets
    longform = raw["longform"]
    return Bindings(
        output=raw["output"],
        parameters=per_workflow,
        longform_parameters={p: [_target(t) for t in s["targets"]] for p, s in longform["parameters"].items()},
        longform_output=longform["output"],
    )


def _target(raw: list) -> Target:
    title, input_name, *mapping = raw
    return Target(title, input_name, mapping[0] if mapping else None)


def node_titled(prompt: dict[str, dict], title: str) -> str:
    """The id of the one node with this title."""
    ids = [nid for nid, node in prompt.items() if node.get("_meta", {}).get("title") == title]
    if len(ids) != 1:
        raise BindingError(f"{len(ids)} nodes titled {title!r} (expected exactly one)")
    return ids[0]


def windows(frames: int) -> int:
    """InfiniteTalk windows needed to cover `frames` frames."""
    if frames <= FRAME_WINDOW:
        return 1
    return 1 + math.ceil((frames - FRAME_WINDOW) / (FRAME_WINDOW - MOTION_FRAMES))


def window_frames(window_count: int) -> int:
    """Frames that `window_count` windows generate before the result is trimmed to the audio."""
    return FRAME_WINDOW + (FRAME_WINDOW - MOTION_FRAMES) * (window_count - 1)


def files_to_stage(request, media) -> dict[str, Path]:
    """The job's files ComfyUI must see, keyed like the `staged` names build_graph expects.

    Two-speaker jobs also get their speaker masks written here (a folder of PNGs), because the
    folder has to be staged before the graph is built.
    """
    files = {"audio": media.audio, "mux_audio": media.mux_audio}
    if request.input_type == "image":
        files["image"] = media.image
    else:
        files["video"] = media.video
    if request.person_count == "multi":
        files["audio_2"] = media.audio_2
        files["masks"] = write_speaker_masks(
            request.speaker_boxes, request.width, request.height, media.folder / MASKS_FOLDER
        )
    return files


def write_speaker_masks(boxes, width: int, height: int, folder: Path) -> Path:
    """Writes ref_target_masks as PNGs: speaker 1, speaker 2, then the background if any is left.

    VHS_LoadImages reads the folder in name order and turns alpha into a MASK as 1 - alpha, so a
    region is "on" where the PNG is transparent. The model samples each mask at its 16-pixel
    token grid and divides by the mask's area there, so an empty mask would poison the run with
    NaNs: a speaker box must cover a token, and the background is written only where the two
    boxes leave tokens uncovered (the default left/right halves leave none).
    """
    regions = []
    for number, box in enumerate(boxes, start=1):
        region = np.zeros((height, width), dtype=bool)
        region[round(box.y0 * height):round(box.y1 * height), round(box.x0 * width):round(box.x1 * width)] = True
        if not region[::TOKEN_PIXELS, ::TOKEN_PIXELS].any():
            raise InputError("speaker_boxes", f"the box of speaker {number} is too small: it must cover "
                                              f"at least one {TOKEN_PIXELS}-pixel cell of the {width}x{height} frame")
        regions.append(region)
    labels = ["speaker1", "speaker2"]
    background = ~np.logical_or.reduce(regions)
    if background[::TOKEN_PIXELS, ::TOKEN_PIXELS].any():
        regions.append(background)
        labels.append("background")
    folder.mkdir(parents=True, exist_ok=True)
    for index, (region, label) in enumerate(zip(regions, labels), start=1):
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., 3] = np.where(region, 0, 255)
        Image.fromarray(rgba).save(folder / f"{index}_{label}.png")
    return folder


def build_graph(request, media, staged: dict[str, str], settings: Settings, *, prefix: str,
                frames_dir: Path | None = None, workflows_dir: Path = WORKFLOWS_DIR) -> Graph:
    """The graph for this job, every request parameter bound by name."""
    name = request.workflow
    if media.fps > MAX_FPS:
        field = request.video.field if request.video else "video_path"
        raise InputError(field, f"the video runs at {media.fps:g} fps; InfiniteTalk takes at most "
                                f"{MAX_FPS:g} fps, convert the clip to a lower frame rate")
    if media.frames > settings.max_frames:
        # request.py and media.py refuse this first; a graph must never be built past the limit.
        field = "max_frame" if request.max_frame is not None else (request.audio.field if request.audio else "wav_path")
        raise InputError(
            field,
            f"{media.frames} frames at {media.fps:g} fps is above the {settings.max_frames} frame "
            "limit (MAX_FRAMES); use shorter audio or a smaller max_frame",
        )
    bindings = load_bindings(workflows_dir)
    prompt = load_workflow(name, workflows_dir)
    values = _parameter_values(request, media, staged, settings, prefix)
    for parameter, targets in bindings.for_workflow(name).items():
        if parameter not in values:
            raise BindingError(f"{name}: parameter {parameter!r} is bound but build_graph has no value for it")
        bind(prompt, targets, values[parameter])
    output_node = node_titled(prompt, bindings.output)
    if frames_dir is not None:
        prompt, output_node = to_longform(prompt, bindings, frames_dir)
    return Graph(name=name, prompt=prompt, output_node=output_node,
                 windows=windows(media.frames), frames_dir=frames_dir)


def bind(prompt: dict[str, dict], targets: list[Target], value: Any) -> None:
    for target in targets:
        node = prompt[node_titled(prompt, target.title)]
        if target.input not in node["inputs"]:
            raise BindingError(f"node {target.title!r} has no input {target.input!r}")
        node["inputs"][target.input] = target.value_for(value)


def to_longform(prompt: dict[str, dict], bindings: Bindings, frames_dir: Path) -> tuple[dict[str, dict], str]:
    """Frames stream to `frames_dir`; the video output gives way to a node that reports the folder.

    With output_path set, WanVideoImageToVideoMultiTalk writes each window's frames into a
    timestamped subfolder of it and returns no video; the reporting node's history entry carries
    that subfolder. Nodes that only fed the video output (the mux audio) are dropped.
    """
    prompt = copy.deepcopy(prompt)
    for targets in bindings.longform_parameters.values():
        bind(prompt, targets, str(frames_dir))
    del prompt[node_titled(prompt, bindings.output)]
    spec = bindings.longform_output
    output_node = str(max(int(nid) for nid in prompt) + 1)
    prompt[output_node] = {
        "class_type": spec["class_type"],
        "inputs": {name: [node_titled(prompt, title), index] for name, (title, index) in spec["inputs"].items()},
        "_meta": {"title": spec["title"]},
    }
    return prune(prompt, output_node), output_node


def prune(prompt: dict[str, dict], output_node: str) -> dict[str, dict]:
    """Only the nodes the output depends on."""
    return {nid: prompt[nid] for nid in upstream(prompt, output_node)}


def upstream(prompt: dict[str, dict], node_id: str) -> set[str]:
    """`node_id` and every node it reads from, directly or not."""
    seen, todo = set(), [node_id]
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        todo.extend(str(v[0]) for v in prompt[nid]["inputs"].values() if is_link(v))
    return seen


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def vhs_load_size(src_w: int, src_h: int, custom_width: int, custom_height: int,
                  downscale_ratio: int = 8) -> tuple[int, int]:
    """The frame size VHS_LoadVideo loads a src_w x src_h clip at (its `target_size`): one of
    custom_width/custom_height 0 keeps the aspect ratio, both 0 keep the source size, both set
    crop to that aspect; each side is then rounded to the nearest multiple of downscale_ratio."""
    width, height = float(src_w), float(src_h)
    if custom_width and custom_height:
        width, height = custom_width, custom_height
    elif custom_width:
        width, height = custom_width, height * custom_width / width
    elif custom_height:
        width, height = width * custom_height / height, custom_height
    return (int(width / downscale_ratio + 0.5) * downscale_ratio,
            int(height / downscale_ratio + 0.5) * downscale_ratio)


def source_load_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """(custom_width, custom_height) for "Source video": the smallest load size, aspect ratio
    kept, whose frames still cover width x height, so Resize crops as it would from the full
    source. Only the side that binds is set (the other is 0); (0, 0), the source's own size,
    when the source does not exceed the target on the binding side.

    ComfyUI IMAGE batches are float32 in host memory (width*height*3*4 bytes a frame): a 1080p
    clip loaded whole costs ~25 MB a frame, at about 512x512 ~3 MB.
    """
    by_width = width / src_w >= height / src_h
    side = src_w if by_width else src_h
    value = -(-(width if by_width else height) // LOAD_STEP) * LOAD_STEP   # VHS rounding keeps it
    while value < side:
        custom = (value, 0) if by_width else (0, value)
        loaded = [vhs_load_size(src_w, src_h, *custom, ratio) for ratio in VHS_ROUNDINGS]
        if all(w >= width and h >= height for w, h in loaded):
            return custom
        value += LOAD_STEP
    return (0, 0)


def _parameter_values(request, media, staged: dict[str, str], settings: Settings, prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": request.width,
        "height": request.height,
        "frames": media.frames,
        "fps": float(media.fps),
        "seed": request.seed,
        "steps": request.steps,
        "cfg": float(request.cfg),
        "audio_scale": float(request.audio_scale),
        "force_offload": request.force_offload,
        "attention_mode": settings.attention_mode,
        "audio": staged["audio"],
        "mux_audio": staged["mux_audio"],
        "filename_prefix": prefix,
    }
    if request.input_type == "image":
        values["image"] = staged["image"]
    else:
        source_fps = media.video_info.fps if media.video_info else media.fps
        load_width, load_height = (source_load_size(*media.video_info.display_size, request.width, request.height)
                                   if media.video_info else (0, 0))
        values.update({
            "video": staged["video"],
            # Decoded frames are resized as they are read, so only the covering size is held.
            "video_load_width": load_width,
            "video_load_height": load_height,
            # Load only what the windows consume; the loop repeats the last frame if the clip is shorter.
            "video_frames": window_frames(windows(media.frames)),
            # 0 keeps the clip's own rate; a rate is forced only where media chose another one.
            "video_force_rate": 0 if abs(source_fps - media.fps) < 1e-3 else float(media.fps),
            # Sampling starts half-way down the schedule from the encoded source video, so its
            # motion and framing survive while the mouth follows the new audio.
            "v2v_start_step": request.steps // 2,
        })
    if request.person_count == "multi":
        values.update({
            "audio_2": staged["audio_2"],
            "masks": staged["masks"],
            "multi_audio_type": request.multi_audio_type,
        })
    return values


def apply_settings(prompt: dict[str, dict], name: str, settings: Settings,
                   workflows_dir: Path = WORKFLOWS_DIR) -> dict[str, dict]:
    """The stored graph with the worker's settings bound (what the startup check validates)."""
    prompt = copy.deepcopy(prompt)
    targets = load_bindings(workflows_dir).for_workflow(name).get("attention_mode", [])
    bind(prompt, targets, settings.attention_mode)
    return prompt
