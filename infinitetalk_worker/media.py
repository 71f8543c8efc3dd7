"""The job's media as local files: portrait or source video, one or two speech tracks, and the
track muxed into the result, checked by their content and measured.

`prepare_media(request, settings, job_dir)` resolves every source the request names:
- a `*_path` is read in place when it lies inside one of `settings.input_roots` (the network
  volume, the bundled examples, INPUT_ROOTS) after following `..` and symlinks;
- a `*_url` is downloaded with runpod's SSRF-safe fetch (`rp_ssrf.safe_get`: public addresses
  only, every redirect hop re-checked) under MAX_DOWNLOAD_MB and DOWNLOAD_TIMEOUT_S, the time
  cap holding even against a server that trickles bytes;
- a `*_base64` is decoded (MAX_BASE64_MB was checked by the request parser);
- a medium not given is the bundled example in `examples/`, with a warning.
The content decides what a file is (magic bytes, then Pillow for images and ffprobe for audio
and video); a file that is not what its field says is an `InputError` naming the field. When
anything fails, every file this call wrote into `job_dir` is removed again.

Bounds (documented here, reported in the errors): images 32..8192 pixels a side; videos
16..4096 pixels a side at 1..120 fps; speech from 0.1 s to MAX_AUDIO_S; frames up to
MAX_FRAMES.

`audio_duration(path)` reads the length from the file's header (libsndfile for WAV, FLAC, OGG
and MP3; ffprobe for M4A/AAC and the rest): a 10-minute MP3 takes about a millisecond, where a
full decode takes seconds (bench/bench_audio_probe.py).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import requests
import soundfile
from PIL import Image
from runpod.serverless.utils import rp_ssrf

from .errors import InputError
from .request import MediaSource, Request
from .settings import EXAMPLES_DIR, MiB, Settings

log = logging.getLogger("infinitetalk")

EXAMPLE_IMAGE = EXAMPLES_DIR / "portrait.jpg"
EXAMPLE_VIDEO = EXAMPLES_DIR / "talking.mp4"
EXAMPLE_AUDIO = EXAMPLES_DIR / "speech.wav"
I2V_FPS = 25.0

IMAGE_SIDE = (32, 8192)
VIDEO_SIDE = (16, 4096)
VIDEO_FPS = (1.0, 120.0)
MIN_AUDIO_S = 0.1
MUX_SAMPLE_RATE = 48000
PROBE_TIMEOUT_S = 60.0
MIX_TIMEOUT_S = 300.0
DOWNLOAD_CHUNK = 64 * 1024


@dataclass(frozen=True)
class VideoInfo:
    width: int           # as stored (coded); a phone clip filmed upright is often 1920x1080 + rotation 90
    height: int
    fps: float
    frames: int
    duration_s: float
    has_audio: bool
    rotation: int = 0    # the display matrix's rotation, 0/90/180/270; decoders hand frames on turned

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the frames a decoder hands on: ffmpeg, and OpenCV (VHS_LoadVideo),
        apply the rotation, so a 90 or 270 degree clip comes out with its sides swapped."""
        return (self.height, self.width) if self.rotation % 180 == 90 else (self.width, self.height)


@dataclass
class JobMedia:
    folder: Path  # the per-job folder (made by the pipeline, removed by it)
    image: Path | None  # I2V portrait (JPEG/PNG/WEBP)
    video: Path | None  # V2V source clip
    video_info: VideoInfo | None
    audio: Path  # speaker 1
    audio_2: Path | None  # speaker 2 (multi); a link/copy of speaker 1's file when none given
    mux_audio: Path  # the track muxed into the MP4
    audio_seconds: float  # duration of mux_audio: what the video must cover
    fps: float  # 25.0 for I2V; the source video's for V2V
    frames: int  # request.max_frame, or ceil(audio_seconds * fps)
    warnings: list[str] = field(default_factory=list)


# --- what a file is -----------------------------------------------------------------------------

_LABEL_WORDS = {
    "jpeg": "a JPEG image", "png": "a PNG image", "webp": "a WEBP image",
    "gif": "a GIF image", "bmp": "a BMP image",
    "wav": "WAV audio", "mp3": "MP3 audio", "aac": "AAC audio", "flac": "FLAC audio",
    "ogg": "OGG audio", "m4a": "M4A audio",
    "mp4": "an MP4 file", "mov": "a MOV file", "mkv": "an MKV file", "webm": "a WEBM file",
}
_EXTENSIONS = {
    "jpeg": ".jpg", "png": ".png", "webp": ".webp", "wav": ".wav", "mp3": ".mp3",
    "aac": ".aac", "flac": ".flac", "ogg": ".ogg", "m4a": ".m4a", "mp4": ".mp4",
    "mov": ".mov", "mkv": ".mkv", "webm": ".webm",
}
IMAGE_LABELS = ("jpeg", "png", "webp")
VIDEO_LABELS = ("mp4", "mov", "mkv", "webm")
# Audio may also arrive in a video container holding only sound (M4A is MP4; browsers record WEBM).
AUDIO_LABELS = ("wav", "mp3", "aac", "flac", "ogg", "m4a", *VIDEO_LABELS)
_SOUNDFILE_LABELS = ("wav", "flac", "ogg", "mp3")


def sniff(path: Path) -> str | None:
    """The container a file's first bytes announce ("jpeg", "mp3", "mp4", ...), or None."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync: layer bits 00 are AAC in ADTS framing, the others MPEG audio.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "mov"
        return "m4a" if brand in (b"M4A ", b"M4B ", b"M4P ") else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head else "mkv"
    return None


def _describe(label: str | None) -> str:
    return _LABEL_WORDS.get(label or "", "not a media file this worker knows")


def _ffprobe(path: Path) -> dict | None:
    """ffprobe's streams and format of a file, or None when it cannot read it."""
    cmd = [
        "ffprobe", "-v", "error", "-print_format", "json",
        "-show_entries",
        "format=format_name,duration:stream=index,codec_type,codec_name,width,height,"
        "avg_frame_rate,r_frame_rate,nb_frames,duration:stream_disposition=attached_pic:"
        "stream_side_data=rotation:stream_tags=rotate",
        str(path),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    info = json.loads(done.stdout or "{}")
    return info if info.get("streams") else None


def _streams(info: dict, kind: str) -> list[dict]:
    # Cover art in MP3/M4A files is a "video" stream flagged attached_pic: not a video.
    return [
        s for s in info.get("streams", [])
        if s.get("codec_type") == kind and not s.get("disposition", {}).get("attached_pic")
    ]


def _float(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def audio_duration(path: Path) -> float:
    """Seconds of audio in `path`, from the file's header (never a full decode of a long file).
    Raises ValueError with a sentence when the file is not readable audio."""
    path = Path(path)
    if sniff(path) in _SOUNDFILE_LABELS:
        try:
            info = soundfile.info(str(path))
        except (RuntimeError, soundfile.LibsndfileError):
            info = None
        # libsndfile reports an unknown length of a streamed file as a huge or negative count.
        if info is not None and info.samplerate > 0 and 0 <= info.frames < 2**62:
            return info.frames / info.samplerate
    probe = _ffprobe(path)
    if probe is None or not _streams(probe, "audio"):
        raise ValueError("the file is not readable audio (corrupt or truncated)")
    stream = _streams(probe, "audio")[0]
    return _float(stream.get("duration")) or _float(probe.get("format", {}).get("duration"))


# --- preparing a job's media --------------------------------------------------------------------


def prepare_media(request: Request, settings: Settings, job_dir: Path) -> JobMedia:
    """Local, checked files for every medium of `request`; raises `InputError` naming the field
    and leaves nothing of its own in `job_dir` when it does."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    before = set(job_dir.iterdir())
    started = time.monotonic()
    try:
        media = _prepare(request, settings, job_dir)
    except BaseException:
        for leftover in set(job_dir.iterdir()) - before:
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        raise
    log.info(
        "media %s: %s, %.2f s of audio, %d frames at %g fps, ready in %.2f s",
        job_dir.name, request.workflow, media.audio_seconds, media.frames, media.fps,
        time.monotonic() - started,
    )
    return media


def _prepare(request: Request, settings: Settings, job_dir: Path) -> JobMedia:
    warnings: list[str] = []
    image = video = video_info = None
    if request.input_type == "image":
        image = _obtain(request.image, "image", settings, job_dir, warnings)
    else:
        video = _obtain(request.video, "video", settings, job_dir, warnings)
        video_info = _video_info(_field(request.video, "video_path"), video)

    audio_field = _field(request.audio, "wav_path")
    audio = _obtain(request.audio, "audio", settings, job_dir, warnings)
    seconds = _checked_audio_seconds(audio_field, audio, settings)

    audio_2 = None
    mux_audio = audio
    if request.person_count == "multi":
        if request.audio_2 is None:
            audio_2 = _link_or_copy(audio, job_dir / f"audio_2{audio.suffix}")
            warnings.append("audio_2: none given, speaker 2 uses speaker 1's audio")
        else:
            audio_2 = _obtain(request.audio_2, "audio_2", settings, job_dir, warnings)
            _checked_audio_seconds(request.audio_2.field, audio_2, settings)
        if request.multi_audio_type == "add" or request.audio_2 is not None:
            mux_audio = _mix(audio, audio_2, request.multi_audio_type, job_dir / "mux_audio.wav")
            seconds = _duration_or_error("multi_audio_type", mux_audio)
            if seconds > settings.max_audio_s:
                raise InputError(
                    "multi_audio_type",
                    f"with '{request.multi_audio_type}' the two speakers last {seconds:.1f} s "
                    f"together, above the {settings.max_audio_s:g} s limit (MAX_AUDIO_S)",
                )

    fps = I2V_FPS if video_info is None else video_info.fps
    frames = math.ceil(round(seconds * fps, 6))
    if request.max_frame is not None:
        if request.max_frame > frames:
            # InfiniteTalk stops where the audio stops: say so rather than promise more frames.
            warnings.append(
                f"max_frame: {request.max_frame} is more than the audio's {frames} frames at {fps:g} fps; "
                "the video is as long as the audio"
            )
        frames = min(request.max_frame, frames)
    if frames > settings.max_frames:
        raise InputError(
            audio_field,
            f"the audio needs {frames} frames at {fps:g} fps, above the {settings.max_frames} "
            "frame limit (MAX_FRAMES); send shorter audio or set max_frame",
        )
    return JobMedia(
        folder=job_dir, image=image, video=video, video_info=video_info, audio=audio,
        audio_2=audio_2, mux_audio=mux_audio, audio_seconds=seconds, fps=fps, frames=frames,
        warnings=warnings,
    )


def _field(source: MediaSource | None, default: str) -> str:
    return source.field if source is not None else default


_EXAMPLES = {
    "image": (EXAMPLE_IMAGE, "portrait"),
    "video": (EXAMPLE_VIDEO, "video"),
    "audio": (EXAMPLE_AUDIO, "speech"),
}


def _obtain(source: MediaSource | None, medium: str, settings: Settings, job_dir: Path,
            warnings: list[str]) -> Path:
    """The checked local file of one medium, with a file name whose suffix matches its content."""
    if source is None:
        path, what = _EXAMPLES[medium]
        warnings.append(
            f"{medium}: none given, used the bundled example {what} (examples/{path.name})"
        )
        return path
    if source.kind == "path":
        found = _confined(source.field, source.value, settings)
        label = _check_content(source.field, medium, found)
        wanted = _suffix_for(medium, label)
        if found.suffix.lower() == wanted or (wanted == ".jpg" and found.suffix.lower() == ".jpeg"):
            return found
        # Loaders in ComfyUI go by the suffix; give the file the one its content has.
        return _link_or_copy(found, job_dir / f"{medium}{wanted}")
    part = job_dir / f"{medium}.part"
    if source.kind == "url":
        _download(source.field, source.value, part, settings)
    else:
        _decode(source.field, source.value, part, settings)
    label = _check_content(source.field, medium, part)
    return part.rename(job_dir / f"{medium}{_suffix_for(medium, label)}")


def _suffix_for(medium: str, label: str) -> str:
    if medium.startswith("audio") and label in VIDEO_LABELS:
        return ".m4a" if label in ("mp4", "mov") else (".webm" if label == "webm" else ".mka")
    return _EXTENSIONS[label]


def _confined(field_name: str, value: str, settings: Settings) -> Path:
    given = Path(value)
    if not given.is_absolute():
        given = settings.volume_dir / given
    real = given.resolve()
    roots = [root.resolve() for root in settings.input_roots]
    if not any(real == root or real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in settings.input_roots)
        raise InputError(
            field_name,
            f"{value} is outside the folders inputs are read from ({allowed}); put the file on "
            "the network volume or send it as a URL or base64",
        )
    if not real.exists():
        volume = settings.volume_dir
        hint = "" if volume.exists() else f" (no network volume is mounted at {volume})"
        raise InputError(field_name, f"{value} does not exist{hint}")
    if not real.is_file():
        raise InputError(field_name, f"{value} is not a file")
    return real


def _check_content(field_name: str, medium: str, path: Path) -> str:
    if path.stat().st_size == 0:
        raise InputError(field_name, "the file is empty")
    label = sniff(path)
    if medium == "image":
        return _check_image(field_name, path, label)
    if medium == "video":
        return _check_video(field_name, path, label)
    return _check_audio(field_name, path, label)


def _check_image(field_name: str, path: Path, label: str | None) -> str:
    if label not in IMAGE_LABELS:
        raise InputError(field_name, f"the file is {_describe(label)}, not a JPEG, PNG or "
                                     "WEBP image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            low, high = IMAGE_SIDE
            if not (low <= width <= high and low <= height <= high):
                raise InputError(field_name, f"the image is {width}x{height}; each side must "
                                             f"be {low} to {high} pixels")
            image.load()
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise InputError(field_name, f"the {label.upper()} image is corrupt or truncated") from None
    return label


def _check_audio(field_name: str, path: Path, label: str | None) -> str:
    if label not in AUDIO_LABELS:
        raise InputError(field_name, f"the file is {_describe(label)}, not WAV, MP3, M4A/AAC, "
                                     "FLAC or OGG audio")
    probe = _ffprobe(path)
    if probe is None:
        raise InputError(field_name, f"the {_describe(label)} could not be read (corrupt or "
                                     "truncated)")
    if _streams(probe, "video"):
        raise InputError(field_name, f"the file is a video ({label.upper()}), not audio; send "
                                     "its sound track as WAV, MP3, M4A, FLAC or OGG")
    if not _streams(probe, "audio"):
        raise InputError(field_name, f"the {label.upper()} file holds no audio track")
    return label


def _check_video(field_name: str, path: Path, label: str | None) -> str:
    if label not in VIDEO_LABELS:
        raise InputError(field_name, f"the file is {_describe(label)}, not an MP4, MOV, MKV or "
                                     "WEBM video")
    return label


def probe_video(path: Path) -> VideoInfo | None:
    """What ffprobe reads of a video file's first video stream; None when it holds none."""
    probe = _ffprobe(path)
    streams = _streams(probe, "video") if probe else []
    if not streams:
        return None
    stream = streams[0]
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    duration = _float(stream.get("duration")) or _float(probe.get("format", {}).get("duration"))
    return VideoInfo(
        width=int(stream.get("width") or 0),
        height=int(stream.get("height") or 0),
        fps=fps,
        frames=int(_float(stream.get("nb_frames"))) or round(duration * fps),
        duration_s=_float(probe.get("format", {}).get("duration")) or duration,
        has_audio=bool(_streams(probe, "audio")),
        rotation=_rotation(stream),
    )


def _rotation(stream: dict) -> int:
    """The stream's display rotation in degrees, 0/90/180/270 (ffprobe's sign convention varies
    between versions; only whether the sides swap matters). FFmpeg 5+ reports it as side data,
    older versions as a `rotate` tag."""
    values = [d.get("rotation") for d in stream.get("side_data_list", []) if "rotation" in d]
    values.append(stream.get("tags", {}).get("rotate"))
    for value in values:
        degrees = _float(value)
        if degrees:
            return round(degrees / 90) * 90 % 360
    return 0


def _video_info(field_name: str, path: Path) -> VideoInfo:
    info = probe_video(path)
    if info is None:
        what = "could not be read (corrupt or truncated)" if _ffprobe(path) is None else "holds no video"
        raise InputError(field_name, f"the video file {what}")
    low, high = VIDEO_SIDE
    if not (low <= info.width <= high and low <= info.height <= high):
        raise InputError(field_name, f"the video is {info.width}x{info.height}; each side must be {low} "
                                     f"to {high} pixels")
    if not VIDEO_FPS[0] <= info.fps <= VIDEO_FPS[1]:
        raise InputError(field_name, f"the video's frame rate {info.fps:g} is outside "
                                     f"{VIDEO_FPS[0]:g} to {VIDEO_FPS[1]:g} fps")
    if info.duration_s <= 0 or info.frames < 1 or not _first_frame_decodes(path):
        raise InputError(field_name, "the video has no decodable frames (corrupt or truncated)")
    return info


def _rate(text: object) -> float:
    try:
        rate = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate)


def _first_frame_decodes(path: Path) -> bool:
    # A header can be intact while the frames behind it are missing (a cut-off upload).
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-xerror", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-f", "null", "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _duration_or_error(field_name: str, path: Path) -> float:
    try:
        return audio_duration(path)
    except ValueError as err:
        raise InputError(field_name, str(err)) from None


def _checked_audio_seconds(field_name: str, path: Path, settings: Settings) -> float:
    seconds = _duration_or_error(field_name, path)
    if seconds < MIN_AUDIO_S:
        raise InputError(field_name, f"the audio lasts {seconds:.2f} s; it must be at least "
                                     f"{MIN_AUDIO_S:g} s long")
    if seconds > settings.max_audio_s:
        raise InputError(field_name, f"the audio lasts {seconds:.1f} s, above the "
                                     f"{settings.max_audio_s:g} s limit (MAX_AUDIO_S)")
    return seconds


def _link_or_copy(src: Path, dst: Path) -> Path:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def _mix(first: Path, second: Path, how: str, out: Path) -> Path:
    """Both speakers in one track: at once ("para") or speaker 2 after speaker 1 ("add")."""
    mono = f"aresample={MUX_SAMPLE_RATE},aformat=channel_layouts=mono"
    if how == "para":
        # Summed, not averaged, so each voice keeps its level; the limiter catches overlaps.
        join = "amix=inputs=2:duration=longest:normalize=0,alimiter=limit=0.97:level=false"
    else:
        join = "concat=n=2:v=0:a=1"
    graph = f"[0:a]{mono}[a];[1:a]{mono}[b];[a][b]{join}[out]"
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(first), "-i", str(second),
           "-filter_complex", graph, "-map", "[out]", "-c:a", "pcm_s16le", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=MIX_TIMEOUT_S)
    if done.returncode != 0:
        raise InputError("multi_audio_type", "the two speech tracks could not be mixed: "
                                             f"{done.stderr.strip()[-200:]}")
    return out


# --- base64 and downloads -----------------------------------------------------------------------


def _decode(field_name: str, payload: str, dest: Path, settings: Settings) -> None:
    body = payload.rstrip("=").replace("-", "+").replace("_", "/")
    body += "=" * (-len(body) % 4)
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field_name, "is not valid base64") from None
    if len(data) > settings.max_base64_mb * MiB:
        raise InputError(field_name, f"is {len(data) / MiB:.1f} MB decoded, above the "
                                     f"{settings.max_base64_mb} MB limit (MAX_BASE64_MB)")
    dest.write_bytes(data)


class _HttpStatus(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}".strip())
        self.status = status


def _download(field_name: str, url: str, dest: Path, settings: Settings) -> None:
    """Fetch `url` into `dest` within the size and total-time caps, or raise InputError.

    The transfer runs in a helper thread so that the time cap is a wall-clock limit: socket
    timeouts alone restart with every byte a slow server sends."""
    cap = settings.max_download_mb * MiB
    timeout = settings.download_timeout_s
    cancelled = threading.Event()
    outcome: dict[str, BaseException] = {}
    # Opened here, not in the thread, so a thread that outlives the cap never creates a file.
    out = open(dest, "wb")

    def fetch() -> None:
        try:
            # The socket timeout only frees this thread; the wall-clock join below reports.
            with rp_ssrf.safe_get(url, timeout=timeout + 5, max_bytes=cap) as response:
                if response.status_code >= 400:
                    raise _HttpStatus(response.status_code, response.reason or "")
                for chunk in rp_ssrf.iter_content_capped(response, DOWNLOAD_CHUNK, cap):
                    if cancelled.is_set():
                        return
                    out.write(chunk)
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err
        finally:
            out.close()

    worker = threading.Thread(target=fetch, name=f"download-{field_name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        cancelled.set()
        dest.unlink(missing_ok=True)
        raise InputError(field_name, f"the download took longer than the {timeout:g} s limit "
                                     "(DOWNLOAD_TIMEOUT_S)")
    error = outcome.get("error")
    if error is not None:
        dest.unlink(missing_ok=True)
        raise InputError(field_name, _download_problem(error, url, settings)) from None


_NON_PUBLIC = re.compile(r"host '(?P<host>[^']*)' resolves to non-public address (?P<ip>\S+)")
_METADATA_ADDRESSES = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"}
_SHARED_NAT = ipaddress.ip_network("100.64.0.0/10")


def _download_problem(error: BaseException, url: str, settings: Settings) -> str:
    host = urlsplit(url).hostname or ""
    if isinstance(error, rp_ssrf.SSRFError):
        text = str(error)
        refused = _NON_PUBLIC.search(text)
        if refused:
            ip = refused.group("ip")
            if refused.group("host").lower().strip("[]") != host.lower():
                return f"download refused, the server redirected to {ip}, {_address_kind(ip)}"
            return f"download refused, {ip} is {_address_kind(ip)}"
        if "size cap" in text:
            return (f"the file is larger than the {settings.max_download_mb} MB download limit "
                    "(MAX_DOWNLOAD_MB)")
        if text.startswith("blocked URL scheme") or text.startswith("URL has no host"):
            return "download refused, the server redirected to a URL that is not http(s)"
        if text.startswith(("could not resolve host", "no addresses resolved")):
            return f"could not resolve the host name {host}"
        if text.startswith("exceeded maximum redirects"):
            return "download refused after too many redirects"
        if "through proxy" in text:
            return ("download refused: a proxy is set (HTTP_PROXY/HTTPS_PROXY) and the worker "
                    "cannot check the address a proxy connects to; unset it for the worker")
        return f"download refused: {text}"
    if isinstance(error, _HttpStatus):
        return f"the server answered HTTP {error}"
    if isinstance(error, requests.ConnectionError):
        return f"could not connect to {host}"
    if isinstance(error, requests.RequestException):
        return f"the download failed ({type(error).__name__})"
    raise error


def _address_kind(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "not a public address"
    address = getattr(address, "ipv4_mapped", None) or address
    if str(address) in _METADATA_ADDRESSES:
        return "the cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.version == 4 and address in _SHARED_NAT:
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    return "not a public address"
