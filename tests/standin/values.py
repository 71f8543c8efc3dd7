"""The values that travel along links in the stand-in, and the ffmpeg work behind them.

A real ComfyUI passes tensors; the stand-in passes descriptions of them (where the pixels come
from, at what size, how many frames) and only renders pixels where a real node writes a file:
VHS_VideoCombine's MP4, SaveImage's PNGs, the InfiniteTalk loop's long-form frames. That keeps
a run of hundreds of frames cheap while the files on disk are real, decodable media.
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageOps


class MediaError(Exception):
    """ffmpeg or ffprobe could not read or write a file."""


def run_ffmpeg(args: list[str]) -> None:
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise MediaError(f"ffmpeg failed: {done.stderr.strip()[-500:]}")


def ffprobe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise MediaError(f"ffprobe cannot read {path}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


@dataclass(frozen=True)
class Op:
    """One resize step of an IMAGE: 'crop' (fill then centre-crop), 'stretch' or 'invert'."""
    kind: str
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Frames:
    """An IMAGE batch [count, height, width, 3]."""
    kind: str                      # "still" (one image file), "sequence" (folder of PNGs), "solid"
    count: int
    width: int
    height: int
    source: Path | None = None
    source_count: int = 1
    color: str = "0x808080"
    ops: tuple[Op, ...] = ()
    _cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"tensor of shape [{self.count}, {self.height}, {self.width}, 3]"

    def with_count(self, count: int) -> "Frames":
        return replace(self, count=count, _cache={})

    def resized(self, width: int, height: int, kind: str = "stretch") -> "Frames":
        return replace(self, width=width, height=height, ops=self.ops + (Op(kind, width, height),),
                       _cache={})

    def inverted(self) -> "Frames":
        return replace(self, ops=self.ops + (Op("invert"),), _cache={})

    # --- rendering ------------------------------------------------------------------------

    def ffmpeg_input(self, fps: float) -> list[str]:
        """ffmpeg input arguments yielding this batch's frames (looped) at `fps`."""
        if self.kind == "still":
            return ["-loop", "1", "-framerate", f"{fps}", "-i", str(self.source)]
        if self.kind == "sequence":
            return ["-stream_loop", "-1", "-framerate", f"{fps}", "-i", str(self.source / "%06d.png")]
        return ["-f", "lavfi", "-i", f"color=c={self.color}:s={self.width}x{self.height}:r={fps}"]

    def ffmpeg_filter(self) -> str:
        steps = []
        for op in self.ops:
            if op.kind == "crop":
                steps.append(f"scale={op.width}:{op.height}:force_original_aspect_ratio=increase,"
                             f"crop={op.width}:{op.height}")
            elif op.kind == "stretch":
                steps.append(f"scale={op.width}:{op.height}")
            elif op.kind == "invert":
                steps.append("negate")
        steps.append(f"scale={self.width}:{self.height},setsar=1")
        return ",".join(steps)

    def image(self, index: int = 0) -> Image.Image:
        """Frame `index` (a sequence loops) as a PIL image at this batch's size."""
        if self.kind == "solid":
            return Image.new("RGB", (self.width, self.height), "#" + self.color[2:])
        if self.kind == "still":
            path = self.source
        else:
            path = self.source / f"{index % self.source_count + 1:06d}.png"
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
        for op in self.ops:
            if op.kind == "crop":
                img = ImageOps.fit(img, (op.width, op.height), Image.Resampling.LANCZOS)
            elif op.kind == "stretch":
                img = img.resize((op.width, op.height), Image.Resampling.LANCZOS)
            elif op.kind == "invert":
                img = ImageOps.invert(img)
        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), Image.Resampling.LANCZOS)
        return img

    def png_bytes(self, index: int) -> bytes:
        """Frame `index` encoded as PNG; a still is encoded once however many frames ask."""
        key = 0 if self.kind != "sequence" else index % self.source_count
        if key not in self._cache:
            buf = io.BytesIO()
            self.image(index).save(buf, format="PNG", compress_level=1)
            self._cache[key] = buf.getvalue()
        return self._cache[key]


@dataclass(frozen=True)
class Audio:
    """An AUDIO value: a file on disk with its decoded sample rate, channels and length."""
    path: Path
    sample_rate: int
    channels: int
    samples: int

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    def __str__(self) -> str:
        return (f"{{'waveform': tensor of shape [1, {self.channels}, {self.samples}], "
                f"'sample_rate': {self.sample_rate}}}")


def probe_audio(path: Path) -> Audio:
    try:
        info = soundfile.info(str(path))
        return Audio(path, int(info.samplerate), int(info.channels), int(info.frames))
    except Exception:
        pass
    streams = [s for s in ffprobe(path)["streams"] if s.get("codec_type") == "audio"]
    if not streams:
        raise MediaError(f"{path} has no audio stream")
    s = streams[0]
    rate = int(s["sample_rate"])
    duration = float(s.get("duration") or ffprobe(path)["format"]["duration"])
    return Audio(path, rate, int(s.get("channels", 1)), int(round(duration * rate)))


def decode_mono(path: Path, rate: int = 16000) -> np.ndarray:
    """The whole file as mono float32 at `rate` (what MultiTalkWav2VecEmbeds works on)."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-ac", "1", "-ar",
                           str(rate), "-f", "f32le", "-"], capture_output=True)
    if done.returncode != 0:
        raise MediaError(f"ffmpeg cannot decode {path}: {done.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(done.stdout, dtype=np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Audio:
    soundfile.write(str(path), samples.astype(np.float32), rate, subtype="FLOAT")
    return Audio(path, rate, 1, len(samples))


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    has_audio: bool


def probe_video(path: Path) -> VideoInfo:
    data = ffprobe(path)
    video = [s for s in data["streams"] if s.get("codec_type") == "video"]
    if not video:
        raise MediaError(f"{path} has no video stream")
    v = video[0]
    num, _, den = v.get("avg_frame_rate", "0/1").partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    duration = float(v.get("duration") or data["format"].get("duration") or 0.0)
    frames = int(v.get("nb_frames") or round(duration * fps))
    width, height = int(v["width"]), int(v["height"])
    rotation = next((float(d["rotation"]) for d in v.get("side_data_list", []) if "rotation" in d),
                    float(v.get("tags", {}).get("rotate", 0) or 0))
    if round(rotation / 90) % 2:
        # OpenCV (4.13, as VHS_LoadVideo uses it) turns such frames upright and reports the
        # turned size, as ffmpeg does when the stand-in extracts them.
        width, height = height, width
    return VideoInfo(width, height, fps, frames, duration,
                     any(s.get("codec_type") == "audio" for s in data["streams"]))


def vhs_target_size(width: int, height: int, custom_width: int, custom_height: int,
                    downscale_ratio: int) -> tuple[int, int]:
    """VideoHelperSuite's target_size (load_video_nodes.py): the size VHS_LoadVideo loads a
    width x height clip at. One of custom_width/custom_height 0 keeps the aspect ratio, both 0
    keep the source size, both set give that size (centre-cropped to its aspect first); each side
    is then rounded half up to a multiple of downscale_ratio."""
    w, h = float(width), float(height)
    if custom_width and custom_height:
        w, h = custom_width, custom_height
    elif custom_height == 0 and custom_width:
        h, w = h * custom_width / w, custom_width
    elif custom_width == 0 and custom_height:
        w, h = w * custom_height / h, custom_height
    return (int(w / downscale_ratio + 0.5) * downscale_ratio,
            int(h / downscale_ratio + 0.5) * downscale_ratio)


def extract_frames(video: Path, folder: Path, *, force_rate: float, skip: int, every_nth: int,
                   cap: int, size: tuple[int, int] | None = None) -> int:
    """VHS_LoadVideo's frame selection, written as folder/000001.png...; returns the count.
    `size`: the load size (vhs_target_size), reached as VHS does it: centre crop to its aspect,
    then scale; None keeps the decoded size."""
    folder.mkdir(parents=True, exist_ok=True)
    filters = []
    if force_rate:
        filters.append(f"fps={force_rate}")
    selection = f"gte(n\\,{skip})" if skip else "1"
    if every_nth > 1:
        selection += f"*not(mod(n-{skip}\\,{every_nth}))"
    filters.append(f"select='{selection}'")
    if size is not None:
        w, h = size
        filters.append(f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},setsar=1")
    args = ["-i", str(video), "-vf", ",".join(filters), "-fps_mode", "passthrough"]
    if cap:
        args += ["-frames:v", str(cap)]
    run_ffmpeg(args + [str(folder / "%06d.png")])
    return len(list(folder.glob("*.png")))
