"""Long-form videos: frames streamed to disk window by window become one MP4 with the audio.

`StreamingNode` writes frames into a folder the way WanVideoImageToVideoMultiTalk does with
`output_path` set (a fresh `<timestamp>_infinitetalk_output` sub-folder, frame_00000.png ...
numbered across windows, 81 frames then 72 per window, whole windows past the end of the audio,
each PNG written in pieces); the tests check what a user gets: the MP4's frames and audio,
the progress updates, what survives a deadline or a crash, and the host memory as the length
grows.
"""

from __future__ import annotations

import datetime
import io
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import pytest
from PIL import Image

from infinitetalk_worker import longform
from infinitetalk_worker.errors import ComfyError, ComfyUnavailable, JobTimeout
from infinitetalk_worker.longform import LongFormEncoder
from tests import mediagen

pytestmark = pytest.mark.skipif(not mediagen.have_tools(), reason="needs ffmpeg, ffprobe, espeak-ng")

FPS = 25.0


def node_frames(total: int, window: int = 81, motion: int = 9) -> list[int]:
    """Frames the InfiniteTalk loop writes per window for `total` audio frames (whole windows)."""
    counts = [window]
    start = 0
    while window < total and start + window < total:
        start += window - motion
        counts.append(window - motion)
    return counts


def png_frames(size: int, variants: int = 25) -> list[bytes]:
    """The astronaut portrait, shifted a little per frame so the video moves; encoded once."""
    base = mediagen.portrait_array(size, size)
    frames = []
    for i in range(variants):
        buffer = io.BytesIO()
        Image.fromarray(np.roll(base, i, axis=1)).save(buffer, format="PNG")
        frames.append(buffer.getvalue())
    return frames


@dataclass
class StreamingNode:
    """Writes a run's frames into `output_path` like the node, in a thread."""

    output_path: Path
    total_frames: int
    size: int = 64
    pause_s: float = 0.0                      # sampling time of one window
    stop_after_windows: int | None = None     # the run stops (deadline/crash) after k windows
    cut_frame_after_stop: bool = False        # ... leaving half a PNG behind (a crash mid-write)
    after_window: Callable[[int], None] | None = None
    windows_written: int = 0
    folder: Path | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def windows(self) -> int:
        return len(node_frames(self.total_frames))

    def start(self) -> "StreamingNode":
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 120) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the node emulation did not finish"

    def _write(self) -> None:
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        self.folder = self.output_path / f"{stamp}_infinitetalk_output"
        self.folder.mkdir(parents=True, exist_ok=True)
        pictures = png_frames(self.size)
        index = 0
        for number, count in enumerate(node_frames(self.total_frames), start=1):
            time.sleep(self.pause_s)
            if self.stop_after_windows is not None and number > self.stop_after_windows:
                if self.cut_frame_after_stop:
                    data = pictures[index % len(pictures)]
                    (self.folder / f"frame_{index:05d}.png").write_bytes(data[: len(data) // 2])
                return
            for _ in range(count):
                data = pictures[index % len(pictures)]
                with open(self.folder / f"frame_{index:05d}.png", "wb") as f:
                    # In two pieces, as a PNG encoder writes: a follower can see half a file.
                    f.write(data[: len(data) // 2])
                    f.flush()
                    f.write(data[len(data) // 2 :])
                index += 1
            self.windows_written = number
            if self.after_window is not None:
                self.after_window(number)


@pytest.fixture
def speech(tmp_path) -> Callable[[float], Path]:
    """Speech audio (espeak-ng, repeated) lasting the given number of seconds."""
    return lambda seconds: mediagen.speech(tmp_path / f"speech-{seconds:g}.wav", seconds=seconds)


class MemoryWatch:
    """Peak resident memory of this process and of its ffmpeg children, sampled every 20 ms."""

    def __init__(self):
        self.me = psutil.Process()
        self.baseline = self.me.memory_info().rss
        self.peak_self = self.baseline
        self.peak_ffmpeg = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_self = max(self.peak_self, self.me.memory_info().rss)
            for child in self.me.children(recursive=True):
                try:
                    self.peak_ffmpeg = max(self.peak_ffmpeg, child.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass

    @property
    def growth_mb(self) -> float:
        return (self.peak_self - self.baseline) / 2**20


def make_job(tmp_path: Path, audio: Path, seconds: float, **node_options) -> tuple[LongFormEncoder, StreamingNode, list[dict]]:
    frames = math.ceil(seconds * FPS)
    updates: list[dict] = []
    job_dir = tmp_path / f"job-{seconds:g}"
    job_dir.mkdir()
    node = StreamingNode(job_dir / "frames", frames, **node_options)
    encoder = LongFormEncoder(
        job_dir / "frames", job_dir / "result.mp4", fps=FPS, frames=frames,
        windows=node.windows, on_progress=updates.append, job_id="test", poll_s=0.05,
    )
    return encoder, node, updates


def frame_count(path: Path) -> int:
    return mediagen.probe(path)["video"]["frames"]


@pytest.mark.slow
def test_ten_minutes_of_audio_make_a_complete_mp4_with_flat_memory(tmp_path, speech):
    peaks: dict[float, MemoryWatch] = {}
    for seconds in (60.0, 300.0, 600.0):
        audio = speech(seconds)
        encoder, node, updates = make_job(tmp_path, audio, seconds)
        with MemoryWatch() as watch, encoder:
            node.start()
            node.join()
            video = encoder.finish(audio, seconds)
        peaks[seconds] = watch

        info = mediagen.probe(video.path)
        frames = math.ceil(seconds * FPS)
        # The node wrote whole windows past the audio; the MP4 stops with the audio.
        assert sum(node_frames(frames)) > frames
        assert info["video"]["frames"] == frames == video.frames
        assert info["video"]["width"] == info["video"]["height"] == 64
        assert info["video"]["fps"] == FPS
        assert abs(info["audio"]["duration_s"] - seconds) <= 2 / FPS
        assert [u["window"] for u in updates] == list(range(1, node.windows + 1))
        assert updates[-1]["percent"] == 100
        assert not video.partial
        assert not (tmp_path / f"job-{seconds:g}" / "frames").exists()
        assert sorted(p.name for p in (tmp_path / f"job-{seconds:g}").iterdir()) == ["result.mp4"]

    # Holding the frames (what the short path does) would add 10x as much for 10 minutes as
    # for 1 (184 MB of 64x64 RGB); streaming keeps both the worker and ffmpeg flat.
    held_10min_mb = math.ceil(600 * FPS) * 64 * 64 * 3 / 2**20
    one, ten = peaks[60.0], peaks[600.0]
    assert ten.growth_mb < one.growth_mb + 0.1 * held_10min_mb, (one.growth_mb, ten.growth_mb)
    assert ten.peak_ffmpeg < one.peak_ffmpeg + 0.1 * held_10min_mb * 2**20


def test_progress_arrives_window_by_window_while_frames_are_encoded(tmp_path, speech):
    seconds = 12.0
    audio = speech(seconds)
    progress_for = {i: threading.Event() for i in range(1, 10)}
    left_in_folder: list[int] = []

    def wait_for_progress(window: int) -> None:
        # The node goes on with the next window only once this one was reported: a worker
        # that reported at the end would stall it.
        assert progress_for[window].wait(20), f"no progress for window {window} during the run"
        left_in_folder.append(len(list(node.folder.glob("*.png"))))

    encoder, node, updates = make_job(tmp_path, audio, seconds, pause_s=0.1, after_window=wait_for_progress)
    encoder.on_progress = lambda u: (updates.append(u), progress_for[u["window"]].set())
    with encoder:
        node.start()
        node.join()
        video = encoder.finish(audio, seconds)

    assert node.windows == 5
    assert [u["window"] for u in updates] == [1, 2, 3, 4, 5]
    assert all(u["windows"] == 5 and u["stage"] == "sampling" for u in updates)
    assert [u["percent"] for u in updates] == [20, 40, 60, 80, 100]
    assert all(u["elapsed_s"] >= 0 and u["eta_s"] >= 0 for u in updates)
    assert updates[-1]["eta_s"] == 0
    assert "window 2 of 5 done: 153 frames" in updates[1]["message"]
    # Each window's frames were encoded and deleted before the next window was written.
    assert left_in_folder == [0, 0, 0, 0, 0]
    assert frame_count(video.path) == 300


def test_a_deadline_in_window_k_delivers_the_k_finished_windows(tmp_path, speech):
    seconds = 30.0
    audio = speech(seconds)
    encoder, node, _ = make_job(tmp_path, audio, seconds, stop_after_windows=3)
    with encoder:
        node.start()
        node.join()
        video = encoder.finish_partial(audio, seconds)

    assert video is not None and video.partial
    info = mediagen.probe(video.path)
    assert info["video"]["frames"] == 81 + 72 + 72 == video.frames
    assert abs(info["audio"]["duration_s"] - 225 / FPS) <= 2 / FPS
    assert video.windows_done == 3
    assert video.coverage == "it covers 9.0 s of the 30.0 s audio (30 %, 3 of 11 windows)"
    assert video.path.is_file()


def test_a_frame_cut_off_by_a_crash_is_left_out(tmp_path, speech):
    seconds = 20.0
    audio = speech(seconds)
    encoder, node, _ = make_job(tmp_path, audio, seconds, stop_after_windows=2, cut_frame_after_stop=True)
    with encoder:
        node.start()
        node.join()
        assert (node.folder / "frame_00153.png").stat().st_size > 0
        video = encoder.finish_partial(audio, seconds)
    assert video is not None and frame_count(video.path) == 153
    assert not (tmp_path / "job-20" / "frames").exists()


def test_a_run_stopped_before_any_frame_gives_nothing_to_deliver(tmp_path, speech):
    audio = speech(5.0)
    encoder, node, _ = make_job(tmp_path, audio, 5.0, stop_after_windows=0)
    with encoder:
        node.start()
        node.join()
        assert encoder.finish_partial(audio, 5.0) is None
    assert not (tmp_path / "job-5" / "frames").exists()


def test_a_finished_run_without_frames_is_an_error(tmp_path, speech):
    audio = speech(5.0)
    encoder, _, _ = make_job(tmp_path, audio, 5.0)
    with encoder, pytest.raises(ComfyError, match="wrote no video frames"):
        encoder.finish(audio, 5.0)


# --- longform.run: the pipeline's door, with a ComfyUI client that runs the emulated node ---


@dataclass
class Graph:
    frames_dir: Path
    windows: int
    name: str = "I2V_single"
    prompt: dict = field(default_factory=lambda: {
        "12": {"class_type": "WanVideoImageToVideoMultiTalk",
               "inputs": {"frame_window_size": 81, "motion_frame": 9}},
    })


@dataclass
class Media:
    mux_audio: Path
    audio_seconds: float
    fps: float = FPS

    @property
    def frames(self) -> int:
        return math.ceil(self.audio_seconds * self.fps)


class NodeClient:
    """A ComfyUI client whose run writes the frames like the node and stops like ComfyUI does."""

    def __init__(self, seconds: float, stop_after_windows: int | None = None, failure: ComfyError | None = None):
        self.frames = math.ceil(seconds * FPS)
        self.stop_after_windows = stop_after_windows
        self.failure = failure

    def run(self, graph, *, on_progress=None, deadline=None, cancel=None):
        node = StreamingNode(graph.frames_dir, self.frames, stop_after_windows=self.stop_after_windows)
        node.start()
        node.join()
        if self.failure is not None:
            raise self.failure


def run_job(tmp_path: Path, audio: Path, seconds: float, client: NodeClient):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    graph = Graph(job_dir / "frames", windows=len(node_frames(math.ceil(seconds * FPS))))
    updates: list[dict] = []
    result = longform.run(client, graph, Media(audio, seconds), out_dir=job_dir, on_progress=updates.append)
    return result, job_dir, updates


def test_run_delivers_the_whole_video(tmp_path, speech):
    audio = speech(8.0)
    (video, partial, warnings), job_dir, updates = run_job(tmp_path, audio, 8.0, NodeClient(8.0))
    assert (partial, warnings) == (False, [])
    assert video == job_dir / "result.mp4" and frame_count(video) == 200
    assert [u["window"] for u in updates] == [1, 2, 3]
    assert sorted(p.name for p in job_dir.iterdir()) == ["result.mp4"]


@pytest.mark.parametrize(
    "failure",
    [
        JobTimeout("the job ran past its deadline of 60 s and was stopped"),
        ComfyUnavailable("ComfyUI stopped answering (the process exited)"),
    ],
)
def test_run_delivers_what_exists_when_comfyui_stops(tmp_path, speech, failure):
    audio = speech(30.0)
    client = NodeClient(30.0, stop_after_windows=4, failure=failure)
    (video, partial, warnings), job_dir, _ = run_job(tmp_path, audio, 30.0, client)
    assert partial
    assert frame_count(video) == 81 + 3 * 72
    assert warnings == [f"partial video: {failure.message}; it covers 11.9 s of the 30.0 s audio (40 %, 4 of 11 windows)"]
    assert sorted(p.name for p in job_dir.iterdir()) == ["result.mp4"]


def test_run_without_frames_raises_the_runs_error(tmp_path, speech):
    audio = speech(10.0)
    client = NodeClient(10.0, stop_after_windows=0, failure=JobTimeout("the job ran past its deadline"))
    with pytest.raises(JobTimeout, match="deadline"):
        run_job(tmp_path, audio, 10.0, client)
    assert list((tmp_path / "job").iterdir()) == []
