"""What each node class does in the stand-in.

Only the nodes whose behaviour a worker can observe are emulated in detail: loaders (they read
the input files, and fail on corrupt ones like ComfyUI does), resizers (they decide the video
size), MultiTalkWav2VecEmbeds (it decides the frame count), the InfiniteTalk sampling loop
(windows, progress, long-form frames), and the writers (VHS_VideoCombine, SaveImage,
PreviewAny). Every other class passes its inputs through by type (see `passthrough`).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from .schema import Dirs, model_folder
from .values import (Audio, Frames, MediaError, decode_mono, extract_frames, probe_audio,
                     probe_video, run_ffmpeg, vhs_target_size, write_wav)


class Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException."""


class NodeFailure(Exception):
    """An exception as a real node would raise it: its type name, message and traceback."""

    def __init__(self, exception_type: str, message: str, traceback: list[str] | None = None):
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback or []


class Context(Protocol):
    """What a node can do besides computing: report progress, wait, talk to the client."""
    dirs: Dirs
    node_id: str
    class_type: str
    step_delay_s: float

    def progress(self, value: int, total: int) -> None: ...
    def wait(self, seconds: float) -> None: ...
    def trigger(self, window: int | None) -> None: ...
    def send_text(self, text: str) -> None: ...
    def scratch(self, name: str) -> Path: ...


# The part of a real traceback that every node failure shares (execution.py of ComfyUI 0.8.0).
_EXECUTION_FRAMES = [
    '  File "/ComfyUI/execution.py", line 518, in execute\n    output_data, output_ui, has_subgraph, '
    'has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, '
    'execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n',
    '  File "/ComfyUI/execution.py", line 329, in get_output_data\n    return_values = await '
    '_async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, '
    'allow_interrupt=True, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, '
    'v3_data=v3_data)\n',
    '  File "/ComfyUI/execution.py", line 303, in _async_map_node_over_list\n    await '
    'process_inputs(input_dict, i)\n',
    '  File "/ComfyUI/execution.py", line 291, in process_inputs\n    result = f(**inputs)\n',
]


def traceback_for(file: str, line: int, function: str, code: str) -> list[str]:
    return _EXECUTION_FRAMES + [f'  File "{file}", line {line}, in {function}\n    {code}\n']


OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.53 GiB. GPU 0 has a total capacity of 79.19 GiB of "
    "which 1.07 GiB is free. Including non-PyTorch memory, this process has 78.11 GiB memory in "
    "use. Of the allocated memory 74.86 GiB is allocated by PyTorch, and 2.19 GiB is reserved by "
    "PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation "
    "for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)
OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked "
            "before you might have accidentally set the batch_size to a large number.")


def oom_failure() -> NodeFailure:
    return NodeFailure("torch.OutOfMemoryError", f"{OOM_MESSAGE}\n{OOM_TIPS}", traceback_for(
        "/ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/multitalk/multitalk_loop.py", 412,
        "multitalk_loop", "noise_pred, _, self.cache_state = predict_func("))


class Opaque:
    """A value the stand-in never looks into (a model, embeds, a mask...)."""

    def __init__(self, kind: str, origin: str, **facts: Any):
        self.kind = kind
        self.origin = origin
        self.facts = facts

    def __str__(self) -> str:
        return f"<{self.kind} from {self.origin}>"


@dataclass
class Latent:
    """A LATENT dict; the InfiniteTalk loop puts its decoded frames under 'video'."""
    frames: Frames | None = None
    video: Frames | None = None
    output_path: str = ""

    def __str__(self) -> str:
        return "{'samples': tensor, 'video': tensor, 'output_path': %r}" % self.output_path


@dataclass
class TalkEmbeds:
    """WanVideoImageToVideoMultiTalk's image_embeds."""
    start: Frames | None
    width: int
    height: int
    window: int
    motion: int
    mode: str
    output_path: str

    def __str__(self) -> str:
        return "{'multitalk_sampling': True, 'frame_window_size': %d, ...}" % self.window


HANDLERS: dict[str, Callable[..., Any]] = {}


def node(*class_types: str):
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for c in class_types:
            HANDLERS[c] = fn
        return fn
    return register


# --- loaders ------------------------------------------------------------------------------------

@node("LoadImage", "LoadImageMask")
def load_image(ctx: Context, image: str, **_: Any):
    path = ctx.dirs.annotated(image)
    try:
        with Image.open(path) as opened:
            opened.load()
            width, height = opened.size
    except UnidentifiedImageError:
        raise NodeFailure("PIL.UnidentifiedImageError", f"cannot identify image file '{path}'\n",
                          traceback_for("/ComfyUI/nodes.py", 1664, "load_image",
                                        "img = node_helpers.pillow(Image.open, image_path)"))
    return (Frames("still", 1, width, height, source=path), Opaque("MASK", ctx.node_id))


@node("LoadAudio")
def load_audio(ctx: Context, audio: str, **_: Any):
    path = ctx.dirs.annotated(audio)
    try:
        return (probe_audio(path),)
    except MediaError:
        raise NodeFailure("av.error.InvalidDataError",
                          f"[Errno 1094995529] Invalid data found when processing input: '{path}'\n",
                          traceback_for("/ComfyUI/comfy_extras/nodes_audio.py", 383, "execute",
                                        "waveform, sample_rate = load(path)"))


@node("VHS_LoadAudioUpload")
def vhs_load_audio(ctx: Context, audio: str, start_time: float = 0, duration: float = 0, **_: Any):
    loaded = load_audio(ctx, audio)[0]
    return (loaded, loaded.duration)


# VHS_LoadVideo's formats: dim[0] is the downscale ratio the load size is rounded to ("None": 1).
VHS_FORMAT_RATIOS = {"None": 1, "AnimateDiff": 8, "Mochi": 16, "LTXV": 32, "Hunyuan": 16, "Cosmos": 16,
                     "Wan": 8}


@node("VHS_LoadVideo", "VHS_LoadVideoFFmpeg", "VHS_LoadVideoPath", "VHS_LoadVideoFFmpegPath")
def load_video(ctx: Context, video: str, force_rate: float = 0, custom_width: int = 0,
               custom_height: int = 0, frame_load_cap: int = 0, skip_first_frames: int = 0,
               select_every_nth: int = 1, format: str = "None", vae: Any = None, **_: Any):
    path = Path(video) if os.path.isabs(video) else ctx.dirs.annotated(video.strip('"'))
    # load_video: the VAE's ratio (8) with a VAE, else the format's; every frame is resized to
    # target_size as it is decoded, so the batch is held only at the load size.
    ratio = 8 if vae is not None else VHS_FORMAT_RATIOS.get(format, 1)
    try:
        info = probe_video(path)
        size = vhs_target_size(info.width, info.height, custom_width, custom_height, ratio)
        folder = ctx.scratch("frames")
        count = extract_frames(path, folder, force_rate=force_rate, skip=skip_first_frames,
                               every_nth=select_every_nth, cap=frame_load_cap,
                               size=None if size == (info.width, info.height) else size)
    except MediaError as e:
        raise NodeFailure("RuntimeError", f"{e}\n", traceback_for(
            "/ComfyUI/custom_nodes/ComfyUI-VideoHelperSuite/videohelpersuite/load_video_nodes.py",
            155, "load_video", "for frame in gen:"))
    if count == 0:
        raise NodeFailure("RuntimeError", "No frames generated\n")
    with Image.open(folder / "000001.png") as first:
        width, height = first.size
    frames = Frames("sequence", count, width, height, source=folder, source_count=count)
    audio = None
    if info.has_audio:
        wav = ctx.scratch("audio") / "audio.wav"
        start = skip_first_frames / (force_rate or info.fps)
        length = ["-t", f"{count * select_every_nth / (force_rate or info.fps)}"] if frame_load_cap else []
        run_ffmpeg(["-ss", f"{start}", "-i", str(path), *length, "-vn", "-c:a", "pcm_f32le", str(wav)])
        audio = probe_audio(wav)
    loaded_fps = (force_rate or info.fps) / select_every_nth
    video_info = {
        "source_fps": info.fps, "source_frame_count": info.frames, "source_duration": info.duration,
        "source_width": info.width, "source_height": info.height, "loaded_fps": loaded_fps,
        "loaded_frame_count": count, "loaded_duration": count / loaded_fps if loaded_fps else 0.0,
        "loaded_width": width, "loaded_height": height,
    }
    return (frames, count, audio, video_info)


@node("VHS_LoadImages", "VHS_LoadImagesPath")
def load_images(ctx: Context, directory: str, image_load_cap: int = 0, skip_first_images: int = 0,
                select_every_nth: int = 1, **_: Any):
    source = Path(directory) if os.path.isabs(directory) else ctx.dirs.annotated(directory)
    files = sorted(f for f in source.iterdir() if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    files = files[skip_first_images::max(1, select_every_nth)]
    if image_load_cap:
        files = files[:image_load_cap]
    if not files:
        raise NodeFailure("FileNotFoundError", f"No images could be loaded from directory '{directory}'.\n")
    folder = ctx.scratch("images")
    for i, f in enumerate(files, 1):
        with Image.open(f) as img:
            img.convert("RGB").save(folder / f"{i:06d}.png")
    with Image.open(files[0]) as first:
        width, height = first.size
    frames = Frames("sequence", len(files), width, height, source=folder, source_count=len(files))
    return (frames, Opaque("MASK", ctx.node_id, count=len(files)), len(files))


@node("DownloadAndLoadWav2VecModel")
def download_wav2vec(ctx: Context, model: str, **_: Any):
    # The real node downloads the repo into models/transformers/<repo> when it is absent.
    folder = ctx.dirs.models / "transformers" / model
    if not folder.is_dir():
        folder.mkdir(parents=True)
        (folder / "downloaded-by-standin").write_text("the stand-in emulated a Hugging Face download\n")
    return (Opaque("WAV2VECMODEL", ctx.node_id),)


# --- images ---------------------------------------------------------------------------------------

def _fit(width: int, height: int, src_w: int, src_h: int) -> tuple[int, int]:
    ratio = min(width / src_w, height / src_h)
    return max(1, round(src_w * ratio)), max(1, round(src_h * ratio))


@node("ImageResizeKJv2", "ImageResizeKJ")
def resize_kj(ctx: Context, image: Frames, width: int, height: int, keep_proportion: Any = "stretch",
              divisible_by: int = 2, **_: Any):
    src_w, src_h = image.width, image.height
    width = width or (round(src_w * height / src_h) if height else src_w)
    height = height or round(src_h * width / src_w)
    mode = "crop" if keep_proportion == "crop" else "stretch"
    if keep_proportion in ("resize", "total_pixels", True):
        width, height = _fit(width, height, src_w, src_h)
    if divisible_by > 1:
        width, height = width - width % divisible_by, height - height % divisible_by
    out = image.resized(width, height, mode)
    megabytes = out.count * width * height * 3 * 4 / 1024 ** 2
    ctx.send_text(f"<tr><td>Output: </td><td><b>{out.count}</b> x <b>{width}</b> x "
                  f"<b>{height} | {megabytes:.2f}MB</b></td></tr>")
    return (out, width, height, Opaque("MASK", ctx.node_id))


@node("GetImageSizeAndCount")
def image_size(ctx: Context, image: Frames, **_: Any):
    return {"ui": {"text": [f"{image.count}x{image.width}x{image.height}"]},
            "result": (image, image.width, image.height, image.count)}


@node("GetImageRangeFromBatch")
def image_range(ctx: Context, start_index: int = 0, num_frames: int = 1, images: Frames | None = None,
                masks: Any = None, **_: Any):
    if images is None:
        return (None, masks)
    start = start_index if start_index >= 0 else images.count + start_index
    return (images.with_count(max(1, min(num_frames, images.count - start))), masks)


@node("EmptyImage")
def empty_image(ctx: Context, width: int, height: int, batch_size: int = 1, color: int = 0, **_: Any):
    return (Frames("solid", batch_size, width, height, color=f"0x{color:06x}"),)


@node("ImageInvert")
def invert(ctx: Context, image: Frames, **_: Any):
    return (image.inverted(),)


@node("RepeatImageBatch")
def repeat_batch(ctx: Context, image: Frames, amount: int, **_: Any):
    return (image.with_count(image.count * amount),)


@node("INTConstant", "FloatConstant")
def constant(ctx: Context, value: Any, **_: Any):
    return (value,)


def save_path(prefix: str, output_dir: Path) -> tuple[Path, str, str]:
    """folder_paths.get_save_image_path: (full folder, file name stem, subfolder)."""
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    full = output_dir / subfolder
    if os.path.commonpath((str(output_dir), os.path.abspath(full))) != str(output_dir):
        raise NodeFailure("Exception", "**** ERROR: Saving image outside the output folder is not "
                                       f"allowed.\n full_output_folder: {os.path.abspath(full)}\n")
    full.mkdir(parents=True, exist_ok=True)
    return full, filename, subfolder


@node("SaveImage", "PreviewImage")
def save_image(ctx: Context, images: Frames, filename_prefix: str = "ComfyUI", **_: Any):
    kind = "output" if ctx.class_type == "SaveImage" else "temp"
    full, filename, subfolder = save_path(filename_prefix, ctx.dirs.by_type(kind))
    taken = [int(m.group(1)) for f in os.listdir(full)
             if (m := re.fullmatch(re.escape(filename) + r"_(\d+)_\.png", f))]
    counter = max(taken, default=0) + 1
    results = []
    for i in range(images.count):
        name = f"{filename}_{counter + i:05}_.png"
        images.image(i).save(full / name, compress_level=4)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
    return {"ui": {"images": results}, "result": ()}


@node("PreviewAny")
def preview_any(ctx: Context, source: Any = None, **_: Any):
    if isinstance(source, str):
        value = source
    elif isinstance(source, (int, float, bool)):
        value = str(source)
    elif source is None:
        value = "None"
    else:
        try:
            value = json.dumps(source)
        except TypeError:
            value = str(source)
    return {"ui": {"text": [value]}, "result": ()}


# --- audio ----------------------------------------------------------------------------------------

@node("MelBandRoFormerSampler")
def separate_vocals(ctx: Context, model: Any, audio: Audio, **_: Any):
    return (audio, audio)


def _loudness_norm(samples: np.ndarray, lufs: float = -23.0) -> np.ndarray:
    # pyloudnorm's integrated loudness, approximated by the RMS level (no K-weighting, no gating).
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    if rms < 1e-5:
        return samples
    loudness = 20 * np.log10(rms) - 0.691
    return (samples * 10 ** ((lufs - loudness) / 20)).astype(np.float32)


@node("MultiTalkWav2VecEmbeds")
def wav2vec_embeds(ctx: Context, audio_1: Audio, normalize_loudness: bool, num_frames: int, fps: float,
                   multi_audio_type: str = "para", audio_2: Audio | None = None,
                   audio_3: Audio | None = None, audio_4: Audio | None = None,
                   ref_target_masks: Any = None, **_: Any):
    rate = 16000
    end = int(num_frames / fps * rate)
    segments = []
    for audio in (audio_1, audio_2, audio_3, audio_4):
        if audio is None:
            continue
        segment = decode_mono(audio.path, rate)[:end]
        segments.append(_loudness_norm(segment) if normalize_loudness else segment)
    seq_lengths = [int(len(s) / rate * fps) for s in segments]
    durations = [len(s) / rate for s in segments]
    if multi_audio_type == "add" and len(segments) > 1:
        total_frames = sum(seq_lengths)
        mixed = np.concatenate(segments)
        from_audio = int(sum(durations) * fps)
    else:
        total_frames = max(seq_lengths)
        mixed = np.zeros(max(len(s) for s in segments), dtype=np.float32)
        for s in segments:
            mixed[: len(s)] += s
        from_audio = int(max(durations) * fps)
    out = write_wav(ctx.scratch("audio") / "wav2vec_input.wav", mixed, rate)
    embeds = Opaque("MULTITALK_EMBEDS", ctx.node_id, total_frames=total_frames, speakers=len(segments),
                    ref_target_masks=ref_target_masks)
    return (embeds, out, min(num_frames, from_audio))


# --- the InfiniteTalk loop --------------------------------------------------------------------------

@node("WanVideoImageToVideoMultiTalk")
def image_to_video_multitalk(ctx: Context, width: int, height: int, frame_window_size: int, motion_frame: int,
                     start_image: Frames | None = None, mode: str = "auto", output_path: str = "",
                     **_: Any):
    window = ((frame_window_size - 1) // 4) * 4 + 1
    if output_path:
        output_path = os.path.join(output_path, f"{time.strftime('%Y%m%d_%H%M%S')}_{mode}_output")
        os.makedirs(output_path, exist_ok=True)
    embeds = TalkEmbeds(start_image, width, height, window, motion_frame, mode, output_path)
    return (embeds, output_path)


def _sampling_steps(steps: int, start_step: int, end_step: int, denoise_strength: float) -> int:
    end = steps if end_step == -1 else min(end_step, steps)
    return max(1, int(round((end - start_step) * min(1.0, denoise_strength or 1.0))))


@node("WanVideoSampler")
def sampler(ctx: Context, image_embeds: Any, steps: int, samples: Latent | None = None,
            multitalk_embeds: Opaque | None = None, start_step: int = 0, end_step: int = -1,
            denoise_strength: float = 1.0, **_: Any):
    steps = _sampling_steps(steps, start_step, end_step, denoise_strength)
    source = samples.frames if isinstance(samples, Latent) and samples.frames else None
    if not isinstance(image_embeds, TalkEmbeds):
        ctx.trigger(1)
        for i in range(steps):
            ctx.wait(ctx.step_delay_s)
            ctx.progress(i + 1, steps)
        video = source or Frames("solid", 81, 64, 64)
        return (Latent(video=video), Latent(video=video))
    return infinitetalk_loop(ctx, image_embeds, steps, source, multitalk_embeds)


def infinitetalk_loop(ctx: Context, embeds: TalkEmbeds, steps: int, source: Frames | None,
                      audio_embeds: Opaque | None):
    """multitalk_loop: whole windows of `window` frames, the next ones overlapping by `motion`."""
    frame_num, motion = embeds.window, embeds.motion
    total = audio_embeds.facts["total_frames"] if audio_embeds is not None else frame_num
    width, height = embeds.width // 8 * 8, embeds.height // 8 * 8
    frames = source or embeds.start or Frames("solid", 1, width, height, color="0x000000")
    frames = frames.resized(width, height) if (frames.width, frames.height) != (width, height) else frames

    arrive_last = frame_num >= total
    estimated = 1 if arrive_last else total // (frame_num - motion) + 1
    bar_total = estimated * steps
    step_count = generated = audio_start = window = 0
    while True:
        window += 1
        ctx.trigger(window)
        for _ in range(steps):
            ctx.wait(ctx.step_delay_s)
            step_count += 1
            ctx.progress(min(step_count, bar_total), bar_total)
        new = frame_num if window == 1 else frame_num - motion
        if embeds.output_path:
            for i in range(new):
                path = Path(embeds.output_path) / f"frame_{generated + i:05d}.png"
                path.write_bytes(frames.png_bytes(generated + i))
        generated += new
        if arrive_last:
            break
        audio_start += frame_num - motion
        if audio_start + frame_num >= total:
            arrive_last = True
    if embeds.output_path:
        video = Frames("solid", 1, 64, 64, color="0x808080")
    else:
        video = frames.with_count(generated)
    latent = Latent(video=video, output_path=embeds.output_path)
    return (latent, latent)


@node("WanVideoEncode")
def encode(ctx: Context, image: Frames, **_: Any):
    return (Latent(frames=image),)


@node("WanVideoDecode")
def decode(ctx: Context, samples: Latent, **_: Any):
    return (samples.video or samples.frames or Frames("solid", 1, 64, 64),)


@node("WanVideoPassImagesFromSamples")
def pass_images(ctx: Context, samples: Latent, **_: Any):
    return (samples.video or samples.frames or Frames("solid", 1, 64, 64), samples.output_path)


# --- VHS_VideoCombine ---------------------------------------------------------------------------------

_FORMATS = {  # format -> (extension, video codec arguments)
    "video/h264-mp4": ("mp4", ["-c:v", "libx264"]),
    "video/h265-mp4": ("mp4", ["-c:v", "libx264"]),
    "video/nvenc_h264-mp4": ("mp4", ["-c:v", "libx264"]),
    "video/nvenc_hevc-mp4": ("mp4", ["-c:v", "libx264"]),
    "video/webm": ("webm", ["-c:v", "libvpx-vp9", "-b:v", "0"]),
    "image/gif": ("gif", []),
    "image/webp": ("webp", []),
}


@node("VHS_VideoCombine")
def video_combine(ctx: Context, images: Frames, frame_rate: float, filename_prefix: str = "AnimateDiff",
                  format: str = "image/gif", save_output: bool = True, audio: Audio | None = None,
                  pix_fmt: str = "yuv420p", crf: int = 19, trim_to_audio: bool = False, **_: Any):
    out_dir = ctx.dirs.output if save_output else ctx.dirs.temp
    full, filename, subfolder = save_path(filename_prefix, out_dir)
    matcher = re.compile(f"{re.escape(filename)}_(\\d+)\\D*\\..+", re.IGNORECASE)
    counter = max((int(m.group(1)) for f in os.listdir(full) if (m := matcher.fullmatch(f))), default=0) + 1
    first_image = f"{filename}_{counter:05}.png"
    images.image(0).save(full / first_image, compress_level=4)
    output_files = [str(full / first_image)]

    extension, codec = _FORMATS.get(format, _FORMATS["video/h264-mp4"])
    file = f"{filename}_{counter:05}.{extension}"
    for i in range(images.count):
        ctx.progress(i + 1, images.count)
    encode_args = codec + (["-pix_fmt", pix_fmt, "-crf", str(crf)] if extension != "gif" and codec else [])
    if extension == "mp4":
        encode_args += ["-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709",
                        "-color_trc", "bt709", "-movflags", "+faststart"]
    run_ffmpeg([*images.ffmpeg_input(frame_rate), "-frames:v", str(images.count),
                "-vf", images.ffmpeg_filter(), *encode_args, str(full / file)])
    output_files.append(str(full / file))

    if audio is not None and audio.samples > 0 and extension in ("mp4", "webm"):
        with_audio = f"{filename}_{counter:05}-audio.{extension}"
        # VideoHelperSuite pads the audio past the video unless trim_to_audio; -shortest then
        # cuts whichever is longer. Trimmed, the lab's files end a few frames short of the audio
        # (107 frames for 4.4 s at 25 fps); ffmpeg 5's -shortest overshoots instead, so the
        # stand-in cuts where the lab's VideoHelperSuite did.
        if trim_to_audio:
            pad = ["-frames:v", str(max(1, min(images.count, int(audio.duration * frame_rate) - 3)))]
        else:
            pad = ["-af", f"apad=whole_dur={images.count / frame_rate + 1}"]
        audio_codec = ["-c:a", "aac"] if extension == "mp4" else ["-c:a", "libopus"]
        run_ffmpeg(["-i", str(full / file), "-i", str(audio.path), "-map", "0:v", "-map", "1:a",
                    "-c:v", "copy", *audio_codec, *pad, "-shortest", str(full / with_audio)])
        output_files.append(str(full / with_audio))
        file = with_audio

    preview = {"filename": file, "subfolder": subfolder, "type": "output" if save_output else "temp",
               "format": format, "frame_rate": frame_rate, "workflow": first_image,
               "fullpath": output_files[-1]}
    return {"ui": {"gifs": [preview]}, "result": ((save_output, output_files),)}


# --- model files ----------------------------------------------------------------------------------------

def check_model_files(ctx: Context, spec_inputs: dict, class_type: str, values: dict[str, Any]) -> None:
    """Fail like safetensors does on a file that is not one (c1: a zero-byte placeholder).

    LoRA pickers are left alone: their select nodes only pass the name on.
    """
    for name, spec in spec_inputs.items():
        folder = model_folder(class_type, name, spec)
        value = values.get(name)
        if folder in (None, "loras") or not isinstance(value, str) or not value.endswith(".safetensors"):
            continue
        problem = safetensors_problem(ctx.dirs.models / folder / value)
        if problem:
            raise NodeFailure("safetensors._safetensors_rust.SafetensorError",
                              f"Error while deserializing header: {problem}\n", traceback_for(
                                  "/ComfyUI/comfy/utils.py", 64, "load_torch_file",
                                  'with safetensors.safe_open(ckpt, framework="pt", device=device.type) as f:'))


def safetensors_problem(path: Path) -> str | None:
    try:
        data = path.read_bytes()[:1 << 20]
        size = path.stat().st_size
    except OSError:
        return None
    if len(data) < 8:
        return "header too small"
    header_len = int.from_bytes(data[:8], "little")
    if 8 + header_len > size:
        return "invalid header size"
    try:
        json.loads(data[8:8 + header_len])
    except ValueError:
        return "invalid header deserialization"
    return None


# --- every other class ------------------------------------------------------------------------------------

def passthrough(ctx: Context, return_types: list, output_names: list[str], values: dict[str, Any]):
    """Outputs built from the inputs by type, for classes with nothing observable to emulate."""
    def first(kind: type) -> Any:
        return next((v for v in values.values() if isinstance(v, kind)), None)

    defaults = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}
    outputs = []
    for kind, name in zip(return_types, output_names):
        if kind == "IMAGE":
            outputs.append(first(Frames) or Frames("solid", 1, 64, 64))
        elif kind == "AUDIO":
            outputs.append(first(Audio))
        elif kind == "LATENT":
            outputs.append(first(Latent) or Latent(frames=first(Frames)))
        elif isinstance(kind, str) and kind in defaults:
            same = values.get(name)
            outputs.append(same if same is not None and not isinstance(same, (Frames, Audio, Opaque))
                           else defaults[kind])
        else:
            outputs.append(Opaque(str(kind), f"node {ctx.node_id}"))
    return tuple(outputs)
