"""Host memory and encode time of long videos: long-form streaming against the short path.

    .venv/bin/python bench/bench_longform.py [--minutes 1 5 10] [--size 64] [--window-pause 0.05]

For each audio length both paths make the same frames and mux the same speech, in this one run,
each in fresh processes, and the figures are printed as ratios long-form / short path:

- short path (the baseline): what ComfyUI does without output_path. The InfiniteTalk loop keeps
  every window's decoded frames (bf16; float16 here, the same size), concatenates them after the
  last window, WanVideoPassImagesFromSamples turns them into a float32 IMAGE, and
  VideoHelperSuite pipes them into ffmpeg (H.264) and muxes the audio. All of it in ComfyUI's
  process, which shares the worker's host memory.
- long-form: a node process writes each window's new frames as PNGs, as
  WanVideoImageToVideoMultiTalk does with output_path; the worker process runs LongFormEncoder,
  which follows the folder, encodes and deletes each frame, and muxes the audio at the end.

Reported per path: peak host memory (sum of the RSS of every process of that path, sampled
every 20 ms), seconds from the last window to the finished MP4, and CPU seconds. Frames are
small (64x64 by default) so the short path fits in memory; its memory grows with width x height
(x64 at 512x512), the long-form figures barely do.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import mediagen  # noqa: E402  (real speech and portrait, as the tests use)

FPS = 25.0
WINDOW, MOTION = 81, 9


def window_sizes(frames: int) -> list[int]:
    """New frames per window of the InfiniteTalk loop for `frames` audio frames (whole windows)."""
    sizes, start = [WINDOW], 0
    while start + WINDOW < frames:
        start += WINDOW - MOTION
        sizes.append(WINDOW - MOTION)
    return sizes


def pictures(size: int, count: int = 25) -> list[np.ndarray]:
    base = mediagen.portrait_array(size, size)
    return [np.roll(base, i, axis=1) for i in range(count)]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# --- the processes of each path ----------------------------------------------------------------


def role_node(folder: Path, frames: int, size: int, pause: float) -> None:
    """WanVideoImageToVideoMultiTalk with output_path: PNGs per window into a fresh sub-folder."""
    out = folder / time.strftime("%Y%m%d_%H%M%S_infinitetalk_output")
    out.mkdir(parents=True)
    pngs = []
    for picture in pictures(size):
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    index = 0
    for count in window_sizes(frames):
        time.sleep(pause)  # sampling the window
        for _ in range(count):
            (out / f"frame_{index:05d}.png").write_bytes(pngs[index % len(pngs)])
            index += 1
    print(json.dumps({"last_window_at": time.time()}), flush=True)


def role_worker(folder: Path, video: Path, audio: Path, seconds: float, frames: int) -> None:
    """The worker during a long-form run: encoder started, 'ComfyClient.run' = stdin until EOF."""
    from infinitetalk_worker.longform import LongFormEncoder

    with LongFormEncoder(folder, video, audio=audio, audio_seconds=seconds, fps=FPS, frames=frames,
                         windows=len(window_sizes(frames)), job_id="bench") as encoder:
        sys.stdin.read()
        result = encoder.finish()
    print(json.dumps({"ready_at": time.time(), "frames": result.frames, "cpu_s": cpu_seconds()}), flush=True)


def role_short(video: Path, audio: Path, frames: int, size: int, pause: float) -> None:
    """ComfyUI without output_path: frames held to the end, then VideoHelperSuite encodes."""
    picture_f16 = [(p.astype(np.float16) / 127.5 - 1).transpose(2, 0, 1) for p in pictures(size)]
    held: list[np.ndarray] = []
    index = 0
    for count in window_sizes(frames):
        time.sleep(pause)
        window = np.stack([picture_f16[(index + i) % len(picture_f16)] for i in range(count)], axis=1)
        held.append(window)  # gen_video_list: C x T x H x W per window
        index += count
    last_window_at = time.time()
    samples = np.concatenate(held, axis=1)  # torch.cat(gen_video_list), the sampler's output
    del held
    # WanVideoPassImagesFromSamples: clamp_/add_/div_ in place, then .float() into the IMAGE.
    # ComfyUI caches both outputs, so both stay in memory while VideoHelperSuite encodes.
    np.clip(samples, -1, 1, out=samples)
    samples += 1
    samples /= 2
    images = samples.astype(np.float32).transpose(1, 2, 3, 0)
    silent = video.with_suffix(".silent.mp4")
    encode = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{size}x{size}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "medium",
         "-crf", "19", "-pix_fmt", "yuv420p", str(silent)],
        stdin=subprocess.PIPE,
    )
    assert encode.stdin is not None
    for image in images:
        encode.stdin.write((image * 255).astype(np.uint8).tobytes())
    encode.stdin.close()
    encode.wait()
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(silent), "-i", str(audio),
         "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", "-shortest",
         str(video)],
        check=True,
    )
    print(json.dumps({"last_window_at": last_window_at, "ready_at": time.time(), "cpu_s": cpu_seconds()}), flush=True)


# --- measuring -----------------------------------------------------------------------------


class PeakMemory:
    """Peak of the summed RSS of some processes and all their descendants."""

    def __init__(self, pids: list[int]):
        self.roots = [psutil.Process(pid) for pid in pids]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            for root in self.roots:
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for proc in procs:
                    try:
                        total += proc.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def child(*args: str, stdin=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=stdin, stdout=subprocess.PIPE, text=True)


def answer(proc: subprocess.Popen) -> dict:
    assert proc.stdout is not None
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"{proc.args[2:]} failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def measure_long(work: Path, audio: Path, seconds: float, size: int, pause: float) -> dict:
    frames = math.ceil(seconds * FPS)
    folder, video = work / "frames", work / "long.mp4"
    worker = child("worker", str(folder), str(video), str(audio), str(seconds), str(frames), stdin=subprocess.PIPE)
    node = child("node", str(folder), str(frames), str(size), str(pause))
    memory = PeakMemory([worker.pid, node.pid])
    node_result = answer(node)
    assert worker.stdin is not None
    worker.stdin.close()  # the run is over
    worker_result = answer(worker)
    peak = memory.stop()
    assert worker_result["frames"] == frames
    return {"peak_mb": peak, "after_last_s": worker_result["ready_at"] - node_result["last_window_at"],
            "cpu_s": worker_result["cpu_s"]}


def measure_short(work: Path, audio: Path, seconds: float, size: int, pause: float) -> dict:
    frames = math.ceil(seconds * FPS)
    proc = child("short", str(work / "short.mp4"), str(audio), str(frames), str(size), str(pause))
    memory = PeakMemory([proc.pid])
    result = answer(proc)
    peak = memory.stop()
    return {"peak_mb": peak, "after_last_s": result["ready_at"] - result["last_window_at"], "cpu_s": result["cpu_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    parser.add_argument("--window-pause", type=float, default=0.05, help="seconds of 'sampling' per window")
    args = parser.parse_args()

    print(f"{args.size}x{args.size} frames at {FPS:g} fps, {args.window_pause:g} s per window; "
          f"{os.cpu_count()} CPUs")
    header = f"{'audio':>7} {'path':>10} {'peak MB':>9} {'MP4 ready after last window':>28} {'CPU s':>7}"
    print(header)
    peaks: dict[str, list[float]] = {"short": [], "long-form": []}
    with tempfile.TemporaryDirectory(prefix="bench-longform-") as tmp:
        root = Path(tmp)
        longest = max(args.minutes) * 60
        speech = mediagen.speech(root / "speech.wav", seconds=longest)
        for minutes in args.minutes:
            seconds = minutes * 60
            audio = root / f"speech-{minutes:g}.wav"
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(speech),
                            "-t", f"{seconds:.3f}", "-c:a", "pcm_s16le", str(audio)], check=True)
            results = {}
            for name, measure in (("short", measure_short), ("long-form", measure_long)):
                work = root / f"{name}-{minutes:g}"
                work.mkdir()
                results[name] = measure(work, audio, seconds, args.size, args.window_pause)
                r = results[name]
                peaks[name].append(r["peak_mb"])
                print(f"{minutes:>5g} m {name:>10} {r['peak_mb']:>9.0f} "
                      f"{r['after_last_s']:>26.2f} s {r['cpu_s']:>7.1f}")
            short, long = results["short"], results["long-form"]
            print(f"{'':>7} {'ratio':>10} {long['peak_mb'] / short['peak_mb']:>9.2f} "
                  f"{long['after_last_s'] / short['after_last_s']:>28.2f} {long['cpu_s'] / short['cpu_s']:>7.2f}")
    # Each Python process carries ~100 MB of libraries whatever the length: the growth is the figure.
    first, last = args.minutes[0], args.minutes[-1]
    print(f"peak memory growth from {first:g} to {last:g} minutes: short path "
          f"{peaks['short'][-1] - peaks['short'][0]:+.0f} MB, long-form "
          f"{peaks['long-form'][-1] - peaks['long-form'][0]:+.0f} MB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("node", "worker", "short"):
        role, rest = sys.argv[1], sys.argv[2:]
        if role == "node":
            role_node(Path(rest[0]), int(rest[1]), int(rest[2]), float(rest[3]))
        elif role == "worker":
            role_worker(Path(rest[0]), Path(rest[1]), Path(rest[2]), float(rest[3]), int(rest[4]))
        else:
            role_short(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]), float(rest[4]))
    else:
        main()
