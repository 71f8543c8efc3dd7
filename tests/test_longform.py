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
from infinitetalk_worker.errors import ComfyError, ComfyUnavailable
from infinitetalk_worker.longform import LongFormEncoder
from tests import mediagen

pytestmark = pytest.mark.skipif(not mediagen.have_tools(), reason="needs ffmpeg, ffprobe, espeak-ng")

FPS = 25.0


def node_frames(total: int, window: int = 81, motion: int = 9) -> list[int]:
    """Frames the InfiniteTalk loop writes per window for `total` audio frames (whole windows)."""
    counts, start = [window], 0
    while start + window < total:
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
    folder: Path | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def windows(self) -> int:
        return len(node_frames(self.total_frames))

    def start(self) -> StreamingNode:
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

    def __enter__(self) -> MemoryWatch:
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


def make_job(tmp_path: Path, audio: Path, seconds: float,
             **node_options) -> tuple[LongFormEncoder, StreamingNode, list[dict]]:
    frames = math.ceil(seconds * FPS)
    updates: list[dict] = []
    job_dir = tmp_path / f"job-{seconds:g}"
    job_dir.mkdir()
    node = StreamingNode(job_dir / "frames", frames, **node_options)
    encoder = LongFormEncoder(
        job_dir / "frames", job_dir / "result.mp4", audio=audio, audio_seconds=seconds, fps=FPS, frames=frames,
        windows=node.windows, on_progress=updates.append, job_id="test", poll_s=0.05,
    )
    return encoder, node, updates


def frame_count(path: Path) -> int:
    return mediagen.probe(path)["video"]["frames"]


@pytest.mark.slow
def test_ten_minutes_of_audio_make_a_complete_mp4_with_flat_memory(tmp_path, speech):
    peaks: dict[float, MemoryWatch] = {}
    for seconds in (4.0, 60.0, 300.0, 600.0):  # the first one only warms up (imports, caches)
        audio = speech(seconds)
        encoder, node, updates = make_job(tmp_path, audio, seconds)
        with MemoryWatch() as watch, encoder:
            node.start()
            node.join()
            video = encoder.finish()
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

    # Holding the frames, as the short path does, would take 10x as much for 10 minutes as for
    # 1 (184 MB of 64x64 RGB for 10); streaming keeps the worker and ffmpeg flat.
    held_10min_mb = math.ceil(600 * FPS) * 64 * 64 * 3 / 2**20
    growth = [peaks[s].growth_mb for s in (60.0, 300.0, 600.0)]
    ffmpeg = [peaks[s].peak_ffmpeg / 2**20 for s in (60.0, 300.0, 600.0)]
    assert max(growth) - min(growth) < 0.05 * held_10min_mb, growth
    # ffmpeg's own queues between its threads swell for a while on a busy machine (seen once at
    # +90 MB on 2 loaded cores); what must not happen is growth with the length of the video.
    assert max(ffmpeg) - min(ffmpeg) < 0.5 * held_10min_mb, ffmpeg


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
        video = encoder.finish()

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
        video = encoder.finish_partial()

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
        video = encoder.finish_partial()
    assert video is not None and frame_count(video.path) == 153
    assert not (tmp_path / "job-20" / "frames").exists()


def test_a_run_stopped_before_any_frame_gives_nothing_to_deliver(tmp_path, speech):
    audio = speech(5.0)
    encoder, node, _ = make_job(tmp_path, audio, 5.0, stop_after_windows=0)
    with encoder:
        node.start()
        node.join()
        assert encoder.finish_partial() is None
    assert not (tmp_path / "job-5" / "frames").exists()


def test_a_finished_run_without_frames_is_an_error(tmp_path, speech):
    audio = speech(5.0)
    encoder, _, _ = make_job(tmp_path, audio, 5.0)
    with encoder, pytest.raises(ComfyError, match="wrote no video frames"):
        encoder.finish()


# --- end to end: the project's own graph, run by the ComfyUI stand-in --------------------------


@pytest.fixture
def standin_job(comfy_standin):
    """Parse, prepare, stage and build a long-form job on a stand-in; return its runner."""
    from infinitetalk_worker import workflows
    from infinitetalk_worker.comfy import ComfyClient
    from infinitetalk_worker.media import prepare_media
    from infinitetalk_worker.request import parse_request

    def start(seconds: float, behaviour: dict | None = None, *, input_type: str = "image",
              person_count: str = "single", video_fps: float = 25.0):
        standin = comfy_standin({"step_delay_s": 0.02, **(behaviour or {})})
        settings = standin.settings(comfy_dead_after_s=2.0, comfy_interrupt_wait_s=5.0)
        volume = settings.volume_dir
        job_input = {
            "input_type": input_type, "person_count": person_count,
            "wav_path": str(mediagen.speech(volume / "talk.wav", seconds=seconds)),
            "width": 256, "height": 256, "steps": 2, "long_form": True,
        }
        if input_type == "image":
            job_input["image_path"] = str(mediagen.portrait(volume / "face.png", 256, 256))
        else:
            clip = mediagen.video(volume / "clip.mp4", seconds=2.0, fps=video_fps, width=256, height=256)
            job_input["video_path"] = str(clip)
        if person_count == "multi":
            job_input["wav_path_2"] = str(mediagen.speech(volume / "reply.wav", "And this is my answer.",
                                                          seconds=seconds / 2))
        request = parse_request(job_input, settings)
        tag = "rp-longform-e2e"
        job_dir = settings.work_dir / tag
        media = prepare_media(request, settings, job_dir)
        client = ComfyClient(settings)
        staged = client.stage(tag, workflows.files_to_stage(request, media))
        graph = workflows.build_graph(request, media, staged, settings, prefix=f"{tag}/infinitetalk",
                                      frames_dir=job_dir / "frames")
        updates: list[dict] = []

        def run(deadline_s: float = 120.0, cancel_after_window: int | None = None):
            cancel = threading.Event()

            def progress(update: dict) -> None:
                updates.append(update)
                if cancel_after_window is not None and update["window"] >= cancel_after_window:
                    cancel.set()

            try:
                return longform.run(client, graph, media, out_dir=job_dir, on_progress=progress,
                                    deadline=time.monotonic() + deadline_s, cancel=cancel)
            finally:
                client.cleanup(tag)

        run.graph, run.media, run.job_dir, run.updates, run.settings = graph, media, job_dir, updates, settings
        return run

    return start


def leftovers(run) -> list[str]:
    """What the job left besides its media and the delivered MP4."""
    s = run.settings
    comfy = [p for root in (s.comfy_input_dir, s.comfy_output_dir, s.comfy_temp_dir) for p in root.rglob("*")]
    own = [p for p in run.job_dir.iterdir() if p.name.startswith(("result", "frames"))]
    return sorted(str(p) for p in comfy + own if p.name != "result.mp4")


def test_a_long_form_run_through_comfyui_makes_the_mp4_with_audio(standin_job):
    run = standin_job(20.0)
    video, partial, warnings = run()

    info = mediagen.probe(video)
    assert (partial, warnings) == (False, [])
    assert info["video"]["frames"] == run.media.frames == 500
    assert (info["video"]["width"], info["video"]["height"]) == (256, 256)
    assert abs(info["audio"]["duration_s"] - 20.0) <= 2 / FPS
    assert [u["window"] for u in run.updates] == list(range(1, run.graph.windows + 1)) == list(range(1, 8))
    assert leftovers(run) == []


@pytest.mark.parametrize(
    "input_type,person_count,video_fps",
    [("image", "multi", 25.0), ("video", "single", 30000 / 1001), ("video", "multi", 24.0)],
)
def test_every_workflow_has_the_long_form_path_at_its_frame_rate(standin_job, input_type, person_count, video_fps):
    run = standin_job(7.0, input_type=input_type, person_count=person_count, video_fps=video_fps)
    video, partial, warnings = run()

    info = mediagen.probe(video)
    fps = FPS if input_type == "image" else video_fps
    assert not partial
    assert info["video"]["frames"] == run.media.frames == math.ceil(round(run.media.audio_seconds * fps, 6))
    assert info["video"]["fps"] == pytest.approx(fps, abs=1e-3)
    assert abs(info["audio"]["duration_s"] - run.media.audio_seconds) <= 2 / fps
    assert leftovers(run) == []


@pytest.mark.parametrize(
    "behaviour,cancel,cause",
    [
        ({"fail": "die", "at_window": 4}, None, "ComfyUI stopped responding during window 4 of 7"),
        ({"fail": "hang", "at_window": 4}, None, "the job ran out of time"),
        ({"fail": "hang", "at_window": 4}, 3, "the job was cancelled during window 4 of 7"),
        ({"fail": "oom", "at_window": 4}, None, "out of GPU memory while sampling window 4 of 7"),
    ],
    ids=["comfyui-dies", "deadline", "cancel", "out-of-memory"],
)
def test_a_run_stopped_in_window_4_delivers_the_first_3_windows(standin_job, behaviour, cancel, cause):
    run = standin_job(20.0, behaviour)
    video, partial, warnings = run(deadline_s=8.0, cancel_after_window=cancel)

    info = mediagen.probe(video)
    assert partial
    assert info["video"]["frames"] == 81 + 72 + 72
    assert abs(info["audio"]["duration_s"] - 225 / FPS) <= 2 / FPS
    assert len(warnings) == 1 and warnings[0].startswith("partial video: ") and cause in warnings[0]
    assert warnings[0].endswith("it covers 9.0 s of the 20.0 s audio (45 %, 3 of 7 windows)")
    assert [u["window"] for u in run.updates] == [1, 2, 3]
    assert leftovers(run) == []


def test_a_run_that_stops_before_any_frame_fails_with_its_own_error(standin_job):
    run = standin_job(10.0, {"fail": "die", "at_window": 1})
    with pytest.raises(ComfyUnavailable, match="ComfyUI stopped responding"):
        run()
    assert leftovers(run) == []


# --- through the RunPod door: `python handler.py` on a fake RunPod, the stand-in behind it ---------


@pytest.fixture
def worker_on_runpod(comfy_standin, tmp_path):
    """`python handler.py` taking jobs from a fake RunPod, with long-form from 10 s of audio."""
    from tests.runpod_fake import FakeRunPod
    from tests.worker_proc import WorkerProcess, worker_env

    started = []

    def start(behaviour: dict | None = None, **overrides):
        standin = comfy_standin({"step_delay_s": 0.02, **(behaviour or {})})
        settings = standin.settings(longform_threshold_s=10.0, **overrides)
        fake = FakeRunPod()
        worker = WorkerProcess([], worker_env(settings.to_env(), **fake.env()))
        started.append((worker, fake))
        return settings, fake

    yield start
    for worker, fake in started:
        worker.stop()
        fake.close()


def job_input(volume: Path, seconds: float, **extra) -> dict:
    return {
        "image_path": str(mediagen.portrait(volume / "face.png", 256, 256)),
        "wav_path": str(mediagen.speech(volume / f"talk-{seconds:g}.wav", seconds=seconds)),
        "width": 256, "height": 256, "steps": 2, **extra,
    }


def delivered(final: dict, tmp_path: Path, name: str) -> dict:
    """What ffprobe says about the MP4 in the job's output."""
    import base64

    path = tmp_path / name
    path.write_bytes(base64.b64decode(final["output"]["video"], validate=True))
    return mediagen.probe(path)


def test_long_audio_on_runpod_streams_progress_and_returns_the_same_keys(worker_on_runpod, tmp_path):
    settings, fake = worker_on_runpod()
    fake.submit("short", job_input(settings.volume_dir, 4.0))
    fake.submit("long", job_input(settings.volume_dir, 16.0))      # above the 10 s threshold
    short, long = fake.final("short"), fake.final("long")

    assert "error" not in long, long["error"]
    info = delivered(long, tmp_path, "long.mp4")
    assert info["video"]["frames"] == 400
    assert abs(info["audio"]["duration_s"] - 16.0) <= 2 / FPS
    assert set(long["output"]) == set(short["output"])             # same result and metadata keys
    assert long["output"]["frames"] == 400 and not long["output"].get("warnings")
    windows_done = [p["window"] for p in fake.progress("long") if "done" in p.get("message", "")]
    assert windows_done == [1, 2, 3, 4, 5, 6]
    percents = [p["percent"] for p in fake.progress("long")]
    assert percents == sorted(percents), "sampler steps and finished windows never pull the bar back"
    assert not list(settings.work_dir.iterdir())


def test_a_deadline_on_runpod_still_returns_the_finished_windows(worker_on_runpod, tmp_path):
    settings, fake = worker_on_runpod({"fail": "hang", "at_window": 4}, job_timeout_s=8.0)
    fake.submit("late", job_input(settings.volume_dir, 20.0))
    final = fake.final("late")

    info = delivered(final, tmp_path, "partial.mp4")
    assert info["video"]["frames"] == 225
    assert abs(info["audio"]["duration_s"] - 9.0) <= 2 / FPS
    coverage = "it covers 9.0 s of the 20.0 s audio"
    assert any("partial video" in w and coverage in w for w in final["output"]["warnings"])
    assert coverage in final["error"]  # RunPod marks the job FAILED, and the error says so too
    assert not list(settings.work_dir.iterdir())
