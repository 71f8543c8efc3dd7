"""Real media for tests: speech, tones, noise, portraits and videos made with espeak-ng, ffmpeg
and scikit-image, never hand-written bytes pretending to be media.

The container format follows the file name's suffix:

    audio  .wav .mp3 .m4a .flac .ogg
    image  .jpg/.jpeg .png .webp
    video  .mp4 .mov .mkv .webm

    from tests.mediagen import speech, tone, noise, portrait, video, probe
    wav = speech(tmp_path / "hello.wav", "Hello there", seconds=3.0)
    mp3 = tone(tmp_path / "a.mp3", seconds=600)            # a 10-minute MP3 in about a second
    jpg = portrait(tmp_path / "face.jpg", 480, 640)
    mp4 = video(tmp_path / "clip.mp4", seconds=2, fps=25, width=320, height=240, audio=True)
    probe(mp4)["duration_s"]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".flac", ".ogg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")

# Encoder arguments per audio container; low bit rates keep long files small and quick to make.
_AUDIO_CODECS: dict[str, list[str]] = {
    ".wav": ["-c:a", "pcm_s16le"],
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    ".m4a": ["-c:a", "aac", "-b:a", "64k"],
    ".flac": ["-c:a", "flac"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "2"],
}
# Video encoder + the audio encoder each container normally carries.
_VIDEO_CODECS: dict[str, tuple[list[str], list[str]]] = {
    ".mp4": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], ["-c:a", "aac"]),
    ".mov": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], ["-c:a", "aac"]),
    ".mkv": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], ["-c:a", "aac"]),
    ".webm": (
        ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k",
         "-pix_fmt", "yuv420p"],
        ["-c:a", "libopus"],
    ),
}


def _ffmpeg(*args: str | Path) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr}")


def _suffix(path: Path, allowed: tuple[str, ...]) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"{path.name}: suffix must be one of {', '.join(allowed)}")
    return suffix


def _audio_out(path: Path, sample_rate: int) -> list[str]:
    codec = _AUDIO_CODECS[_suffix(path, AUDIO_SUFFIXES)]
    return [*codec, "-ar", str(sample_rate), "-ac", "1", str(path)]


def speech(
    path: Path,
    text: str = "Hello, this is a short test of the talking video worker.",
    *,
    seconds: float | None = None,
    sample_rate: int = 16000,
    voice: str = "en",
) -> Path:
    """Spoken `text` (espeak-ng). With `seconds`, the speech is repeated or cut to last exactly
    that long, so a long clip is still speech all the way through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text],
            check=True, capture_output=True,
        )
        source: list[str | Path] = ["-i", raw]
        if seconds:
            source = ["-stream_loop", "-1", *source, "-t", f"{seconds:.6f}"]
        _ffmpeg(*source, *_audio_out(path, sample_rate))
    return path


def tone(
    path: Path, seconds: float = 2.0, *, freq: float = 440.0, sample_rate: int = 16000
) -> Path:
    """A sine tone of `seconds` in the container the suffix names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    src = f"sine=frequency={freq}:sample_rate={sample_rate}:duration={seconds}"
    _ffmpeg("-f", "lavfi", "-i", src, *_audio_out(path, sample_rate))
    return path


def noise(
    path: Path, seconds: float = 2.0, *, sample_rate: int = 16000, color: str = "pink"
) -> Path:
    """Coloured noise of `seconds` in the container the suffix names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    src = f"anoisesrc=duration={seconds}:color={color}:sample_rate={sample_rate}:amplitude=0.3"
    _ffmpeg("-f", "lavfi", "-i", src, *_audio_out(path, sample_rate))
    return path


def portrait_array(width: int = 512, height: int = 512) -> np.ndarray:
    """scikit-image's public-domain astronaut photo, cropped around the face and upper body to
    the requested aspect ratio and resized to width x height (RGB uint8)."""
    from skimage import data

    full = data.astronaut()  # 512x512, face around rows 40-220, columns 160-330
    cx, cy = 245, 170
    aspect = width / height
    # A 360-pixel square around the face, widened or heightened to the aspect within the photo.
    if aspect >= 1:
        crop_w = min(512, int(round(360 * aspect)))
        crop_h = int(round(crop_w / aspect))
    else:
        crop_h = min(512, int(round(360 / aspect)))
        crop_w = int(round(crop_h * aspect))
    x0 = min(max(cx - crop_w // 2, 0), 512 - crop_w)
    y0 = min(max(cy - crop_h // 2, 0), 512 - crop_h)
    crop = full[y0 : y0 + crop_h, x0 : x0 + crop_w]
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.LANCZOS))


def portrait(path: Path, width: int = 512, height: int = 512) -> Path:
    """The astronaut portrait as JPEG, PNG or WEBP (from the suffix)."""
    path = Path(path)
    suffix = _suffix(path, IMAGE_SUFFIXES)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(portrait_array(width, height))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[suffix]
    image.save(path, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return path


def video(
    path: Path,
    seconds: float = 2.0,
    *,
    fps: float = 25.0,
    width: int = 320,
    height: int = 240,
    audio: bool | Path = True,
    picture: Path | None = None,
    rotation: int = 0,
) -> Path:
    """A video of `seconds` at `fps` and width x height (even numbers) in the container the suffix
    names. The picture is ffmpeg's moving test pattern, or `picture` (an image file) held still.
    `audio`: True adds a 440 Hz tone as long as the video, a path muxes that file (cut to the
    video's length), False makes a silent video. `rotation` (MP4/MOV): a display matrix turning
    the stored width x height frames, as phones write upright clips."""
    path = Path(path)
    vcodec, acodec = _VIDEO_CODECS[_suffix(path, VIDEO_SUFFIXES)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if picture is not None:
        inputs: list[str | Path] = ["-loop", "1", "-framerate", str(fps), "-i", picture]
        vfilter = ["-vf", f"scale={width}:{height},format=yuv420p"]
    else:
        inputs = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
        vfilter = []
    if audio is True:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    elif audio:
        inputs += ["-i", audio]
    amap = ["-map", "1:a:0", *acodec] if audio else ["-an"]
    _ffmpeg(*inputs, "-map", "0:v:0", *vfilter, *vcodec, *amap, "-r", str(fps),
            "-t", f"{seconds:.6f}", path)
    if rotation:
        _rotate(path, rotation)
    return path


def _rotate(path: Path, degrees: int) -> None:
    """Adds a display matrix to an MP4/MOV without re-encoding (FFmpeg 6+: -display_rotation;
    before: the stream's `rotate` metadata)."""
    stored = path.with_name(f"stored-{path.name}")
    path.rename(stored)
    try:
        try:
            _ffmpeg("-display_rotation", str(degrees), "-i", stored, "-map", "0", "-c", "copy", path)
        except RuntimeError:
            _ffmpeg("-i", stored, "-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", path)
    finally:
        stored.unlink()


def truncated(src: Path, dst: Path, keep: float = 0.3, *, size: int | None = None) -> Path:
    """A copy of `src` cut to the first `keep` fraction of its bytes (or the first `size` bytes):
    a real file's header with a broken body, the way an interrupted upload looks."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: size if size is not None else max(1, int(len(data) * keep))])
    return Path(dst)


def silent_wav(path: Path, sample_rate: int = 16000) -> Path:
    """A valid WAV file holding no samples at all (an empty recording)."""
    import soundfile

    soundfile.write(str(path), np.zeros(0, dtype=np.int16), sample_rate, subtype="PCM_16")
    return Path(path)


def probe(path: Path) -> dict:
    """What ffprobe says about a media file: {"duration_s", "format", "video": {...} | None,
    "audio": {...} | None, "streams": [...]} ; video has width, height, fps, frames."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         "-count_packets", str(path)],
        capture_output=True, text=True, check=True,
    )
    info = json.loads(done.stdout)
    streams = info.get("streams", [])
    v = next((s for s in streams if s.get("codec_type") == "video"), None)
    a = next((s for s in streams if s.get("codec_type") == "audio"), None)
    video_info = None
    if v is not None:
        num, _, den = v.get("avg_frame_rate", "0/1").partition("/")
        fps = float(num) / float(den) if float(den or 0) else 0.0
        video_info = {
            "width": int(v["width"]),
            "height": int(v["height"]),
            "fps": fps,
            "frames": int(v.get("nb_read_packets") or v.get("nb_frames") or 0),
            "codec": v.get("codec_name"),
        }
    audio_info = None
    if a is not None:
        audio_info = {
            "codec": a.get("codec_name"),
            "sample_rate": int(a.get("sample_rate", 0)),
            "channels": int(a.get("channels", 0)),
            "duration_s": float(a.get("duration") or 0.0),
        }
    return {
        "duration_s": float(info.get("format", {}).get("duration") or 0.0),
        "format": info.get("format", {}).get("format_name"),
        "video": video_info,
        "audio": audio_info,
        "streams": streams,
    }


def have_tools() -> bool:
    """True when ffmpeg, ffprobe and espeak-ng are on PATH."""
    return all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "espeak-ng"))
