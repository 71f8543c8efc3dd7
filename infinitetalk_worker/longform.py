"""Long videos: encode the frames InfiniteTalk streams to disk while the run is still going.

Why: in the short path ComfyUI holds every frame of the video in host memory until the end
(about 100 GB for a few minutes at 512x512), and a job that dies at its deadline loses all of
it. With `output_path` set, WanVideoImageToVideoMultiTalk instead writes each window's new
frames as PNG files (frame_00000.png, ... numbered across windows; 81 frames for the first
window, 81 - 9 = 72 for each later one) into a fresh `<output_path>/<timestamp>_<mode>_output`
folder, and returns only a dummy video. `LongFormEncoder` follows that folder from a thread,
pipes each finished frame into one ffmpeg process (H.264) and deletes it, so memory and disk
stay flat whatever the length, progress moves window by window, and at the deadline, on a
ComfyUI crash or on cancel whatever was made is still turned into an MP4.

The node does not trim to the audio: it writes whole windows, up to ~2.8 s past the end.
Only the first `frames` frames are encoded; the audio is muxed and cut to the same length.

    frames_dir = job_dir / "frames"                       # absolute, one per job
    graph = build_graph(..., frames_dir=frames_dir)
    video, partial, warnings = longform.run(client, graph, media, out_dir=job_dir, ...)
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import ComfyError, EncodeError
from .workflows import FRAME_WINDOW, MOTION_FRAMES

if TYPE_CHECKING:
    from .comfy import ComfyClient, Progress
    from .media import JobMedia
    from .workflows import Graph

log = logging.getLogger("infinitetalk")

_NODE = "WanVideoImageToVideoMultiTalk"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A PNG ends with an empty IEND chunk (length 0, type, fixed CRC); PIL writes it last, so a file
# ending with it is complete, and one that does not is still being written (or was cut off).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_POLL_S = 0.2

_FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
# H.264 as VideoHelperSuite's h264-mp4 writes it for the short path: same look either way.
_X264 = ["-c:v", "libx264", "-preset", "medium", "-crf", "19", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac", "-b:a", "192k"]


@dataclass(frozen=True)
class LongVideo:
    """The MP4 made from the streamed frames."""

    path: Path
    frames: int            # frames in the MP4
    fps: float
    audio_seconds: float   # length of the audio the video was meant to cover
    windows_done: int      # complete InfiniteTalk windows among the frames seen
    windows: int
    partial: bool          # the run stopped before the end; the video covers only the start

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    @property
    def coverage(self) -> str:
        """How much of the audio the video covers, for warnings and error sentences."""
        covered = min(self.duration_s, self.audio_seconds)
        share = 100 * covered / self.audio_seconds if self.audio_seconds > 0 else 100.0
        return (
            f"it covers {covered:.1f} s of the {self.audio_seconds:.1f} s audio ({share:.0f} %, "
            f"{self.windows_done} of {self.windows} windows)"
        )


class LongFormEncoder:
    """Follows the node's frames folder and encodes each frame as soon as it is complete.

    Start it before the run (`with LongFormEncoder(...) as encoder:`), then call `finish` when
    the run succeeded or `finish_partial` when it stopped early. Leaving the `with` block stops
    ffmpeg and removes `frames_dir` and the intermediate files; the MP4 stays at `video_path`.
    `on_progress` receives one dict per finished window (from the follower thread).
    """

    def __init__(
        self,
        frames_dir: Path,
        video_path: Path,
        *,
        audio: Path,
        audio_seconds: float,
        fps: float,
        frames: int,
        windows: int,
        window_frames: int = FRAME_WINDOW,
        motion_frames: int = MOTION_FRAMES,
        on_progress: Callable[[dict], None] | None = None,
        job_id: str = "",
        poll_s: float = _POLL_S,
    ):
        if not frames_dir.is_absolute():
            # The node resolves a relative output_path against ComfyUI's working directory.
            raise ValueError(f"frames_dir must be absolute, got {frames_dir}")
        self.frames_dir = frames_dir
        self.video_path = video_path
        self.audio = audio
        self.audio_seconds = audio_seconds
        self.fps = fps
        self.limit = frames
        self.windows = max(windows, 1)
        self.window_frames = window_frames
        self.new_per_window = window_frames - motion_frames
        self.on_progress = on_progress
        self.job_id = job_id
        self.poll_s = poll_s

        stem = video_path.with_name(video_path.stem)
        self._video_only = Path(f"{stem}.video-only.mp4")
        self._video_log = Path(f"{stem}.video.log")
        self._audio_aac = Path(f"{stem}.audio.m4a")
        self._audio_log = Path(f"{stem}.audio.log")
        self._folder: Path | None = None
        self._seen = 0          # frames taken from the folder (encoded or past the limit)
        self._encoded = 0       # frames piped into ffmpeg
        self._windows_done = 0
        self._started = 0.0
        self._first_window_at: float | None = None
        self._video: subprocess.Popen | None = None
        self._audio: subprocess.Popen | None = None
        self._failure: str | None = None
        self._run_over = threading.Event()
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"longform-{job_id}", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LongFormEncoder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self._started = time.monotonic()
        # AAC-encoding minutes of audio takes seconds; done during the run, the final mux is a
        # stream copy and the MP4 is ready right after the last window.
        self._audio = _spawn(
            [*_FFMPEG, "-t", _seconds(self.limit / self.fps), "-i", str(self.audio),
             "-vn", *_AAC, str(self._audio_aac)],
            self._audio_log,
        )
        self._thread.start()
        log.info("job=%s long-form: following frames in %s (%d windows, %d frames at %g fps)",
                 self.job_id, self.frames_dir, self.windows, self.limit, self.fps)

    def finish(self) -> LongVideo:
        """The run ended normally: encode the last frames, mux the audio, return the MP4."""
        self._drain()
        if self._encoded == 0:
            raise ComfyError(f"ComfyUI finished but wrote no video frames to {self.frames_dir}")
        return self._mux(partial=False)

    def finish_partial(self) -> LongVideo | None:
        """The run stopped early: an MP4 of the complete frames that exist, or None if none do."""
        self._drain()
        if self._encoded == 0:
            return None
        return self._mux(partial=True)

    def close(self) -> None:
        """Stop following, stop ffmpeg, remove the frames folder and intermediates (idempotent)."""
        self._aborted.set()
        self._run_over.set()
        _kill(self._video)  # unblocks a follower stuck writing to it
        if self._thread.ident is not None:
            self._thread.join()
        _kill(self._video)  # one the follower may have started meanwhile
        _kill(self._audio)
        for path in (self._video_only, self._video_log, self._audio_aac, self._audio_log):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.frames_dir, ignore_errors=True)

    # --- the follower thread ---------------------------------------------------------------

    def _follow(self) -> None:
        try:
            while not self._aborted.is_set():
                final = self._run_over.is_set()
                self._take_ready_frames(final)
                if final:
                    return
                self._run_over.wait(self.poll_s)
        except Exception as e:  # reported by finish(); the thread must not die silently
            if not self._aborted.is_set():
                log.exception("job=%s long-form: following frames failed", self.job_id)
                self._failure = self._failure or f"{type(e).__name__}: {e}"

    def _take_ready_frames(self, final: bool) -> None:
        folder = self._folder or self._find_folder()
        if folder is None:
            return
        while not self._aborted.is_set():
            path = folder / f"frame_{self._seen:05d}.png"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return
            if not (data.startswith(_PNG_SIGNATURE) and data.endswith(_PNG_END)):
                if final:
                    log.warning("job=%s long-form: %s is incomplete (the run stopped while "
                                "writing it); left out", self.job_id, path.name)
                return
            if self._encoded < self.limit:
                self._encode(data)
            del data
            path.unlink()
            self._seen += 1
            self._count_window()

    def _find_folder(self) -> Path | None:
        # frames_dir is fresh per job, so the node's sub-folder in it is this job's.
        found = sorted(p for p in self.frames_dir.glob("*_output") if p.is_dir())
        if not found:
            return None
        if len(found) > 1:
            log.warning("job=%s long-form: %d frame folders in %s; following %s",
                        self.job_id, len(found), self.frames_dir, found[0].name)
        self._folder = found[0]
        return self._folder

    def _encode(self, png: bytes) -> None:
        if self._video is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self._video = _spawn(
                [*_FFMPEG, "-f", "image2pipe", "-c:v", "png", "-framerate", str(rate), "-i", "-",
                 *_X264, str(self._video_only)],
                self._video_log,
                stdin=subprocess.PIPE,
            )
        assert self._video.stdin is not None
        try:
            self._video.stdin.write(png)
        except BrokenPipeError:
            self._failure = _problem(self._video, self._video_log)
            raise
        self._encoded += 1

    def _count_window(self) -> None:
        if self._seen < self.window_frames:
            done = 0
        else:
            done = 1 + (self._seen - self.window_frames) // self.new_per_window
        if done == self._windows_done:
            return
        self._windows_done = done
        self.windows = max(self.windows, done)
        now = time.monotonic()
        elapsed = now - self._started
        if self._first_window_at is None:
            self._first_window_at = now
        # The first window also loads the models; later ones are a steadier clock.
        per_window = (now - self._first_window_at) / (done - 1) if done > 1 else elapsed
        eta = per_window * (self.windows - done)
        covered = min(self._seen, self.limit) / self.fps
        message = (
            f"window {done} of {self.windows} done: {self._seen} frames ({covered:.1f} s of "
            f"video), {_clock(elapsed)} elapsed, about {_clock(eta)} left"
        )
        log.info("job=%s long-form: %s", self.job_id, message)
        if self.on_progress is None:
            return
        update = {
            "stage": "sampling",
            "message": message,
            "percent": round(100 * done / self.windows, 1),
            "window": done,
            "windows": self.windows,
            "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1),
        }
        try:
            self.on_progress(update)
        except Exception:  # progress is best effort: never stop encoding over it
            log.exception("job=%s long-form: progress callback failed", self.job_id)

    # --- finishing -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Take every complete frame left, then close ffmpeg's input and let it finish."""
        self._run_over.set()
        self._thread.join()
        if self._failure is not None:
            raise EncodeError(f"encoding the long video failed: {self._failure}")
        if self._video is None:
            return
        assert self._video.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # ffmpeg died: its exit status says so
            self._video.stdin.close()
        if self._video.wait() != 0:
            raise EncodeError(f"encoding the long video failed: {_problem(self._video, self._video_log)}")

    def _mux(self, *, partial: bool) -> LongVideo:
        started = time.monotonic()
        assert self._audio is not None
        if self._encoded == self.limit and self._audio.wait() == 0:
            # The audio was encoded at start() to exactly this length.
            audio = ["-i", str(self._audio_aac), "-c", "copy"]
        else:
            # Fewer frames than planned: cut the audio to them. Only the audio is cut: the video
            # already ends at the right frame, and a stream copy cut at the end could drop
            # frames that earlier ones refer to.
            _kill(self._audio)
            audio = ["-t", _seconds(self._encoded / self.fps), "-i", str(self.audio), "-c:v", "copy", *_AAC]
        cmd = [*_FFMPEG, "-i", str(self._video_only), *audio, "-map", "0:v:0", "-map", "1:a:0",
               "-movflags", "+faststart", str(self.video_path)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise EncodeError(f"adding the audio to the long video failed: {_last_line(done.stderr)}")
        result = LongVideo(
            path=self.video_path,
            frames=self._encoded,
            fps=self.fps,
            audio_seconds=self.audio_seconds,
            windows_done=self._windows_done,
            windows=self.windows,
            partial=partial,
        )
        log.info("job=%s long-form: MP4 ready (%d frames, %.1f s%s), mux took %.2fs",
                 self.job_id, result.frames, result.duration_s, ", partial" if partial else "",
                 time.monotonic() - started)
        return result


def run(
    client: ComfyClient,
    graph: Graph,
    media: JobMedia,
    *,
    out_dir: Path,
    on_progress: Callable[[dict], None] | None = None,
    on_comfy_progress: Callable[[Progress], None] | None = None,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
    job_id: str = "",
) -> tuple[Path, bool, list[str]]:
    """Run a long-form graph and return (MP4, partial, warnings).

    When the run stops early (deadline, cancel, ComfyUI crash or error) after some frames were
    made, those frames are still delivered: the MP4 comes back with partial=True and a warning
    naming the cause and how much of the audio it covers. With no frame made, the run's error
    is raised as it was.
    """
    if graph.frames_dir is None:
        raise ValueError(f"graph {graph.name} has no frames_dir: it is not the long-form variant")
    window_frames, motion_frames = window_shape(graph.prompt)
    encoder = LongFormEncoder(
        graph.frames_dir,
        out_dir / "result.mp4",
        audio=media.mux_audio,
        audio_seconds=media.audio_seconds,
        fps=media.fps,
        frames=media.frames,
        windows=graph.windows,
        window_frames=window_frames,
        motion_frames=motion_frames,
        on_progress=on_progress,
        job_id=job_id or out_dir.name,
    )
    with encoder:
        try:
            client.run(graph, on_progress=on_comfy_progress, deadline=deadline, cancel=cancel)
        except ComfyError as stopped:
            try:
                video = encoder.finish_partial()
            except EncodeError as e:
                # The user reads why the run stopped; the failed rescue is for the log.
                log.error("job=%s long-form: the partial video could not be made: %s", encoder.job_id, e)
                raise stopped from None
            if video is None:
                raise
            warning = f"partial video: {stopped.message.rstrip('.')}; {video.coverage}"
            log.warning("job=%s long-form: %s", encoder.job_id, warning)
            return video.path, True, [warning]
        video = encoder.finish()
    return video.path, False, []


def window_shape(prompt: dict[str, dict]) -> tuple[int, int]:
    """(frames per window, overlap) as the graph's long-video node will use them."""
    for node in prompt.values():
        if node.get("class_type") != _NODE:
            continue
        inputs = node.get("inputs", {})
        size, motion = inputs.get("frame_window_size"), inputs.get("motion_frame")
        if isinstance(size, int) and isinstance(motion, int):
            # The node rounds the window down to 4k+1 frames, as the VAE needs.
            return ((size - 1) // 4) * 4 + 1, motion
    return FRAME_WINDOW, MOTION_FRAMES


def _spawn(cmd: list[str], log_path: Path, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen:
    # ffmpeg's messages go to a file: a pipe nobody reads could stall it.
    with open(log_path, "wb") as stderr:
        return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr)


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdin is not None:
        with contextlib.suppress(OSError):  # unflushed input to a dead process
            proc.stdin.close()


def _problem(proc: subprocess.Popen, log_path: Path) -> str:
    """ffmpeg's last message, for an error sentence."""
    _kill(proc)
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        text = ""
    return _last_line(text) or f"ffmpeg exited with status {proc.returncode}"


def _seconds(value: float) -> str:
    return f"{value:.6f}"


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
