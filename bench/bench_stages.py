"""The worker's own time per stage, before ComfyUI gets a job and after it finishes, against the
bare cost of moving the same bytes.

    .venv/bin/python bench/bench_stages.py [--seconds 10 60] [--repeat 5] [--image-size 1024]
                                           [--audio-format wav] [--sample-rate 44100]
                                           [--result-mb 1 7]

A job is a portrait (JPEG) and speech (espeak-ng, `--seconds` long), given four ways:
`*_path` (files on the network volume, here a temp folder as VOLUME_DIR), `*_url` (served by a
local http.server on 127.0.0.1), `*_base64` and a `data:` URI. Before ComfyUI the worker runs,
as pipeline.Pipeline does: parse_request, prepare_media (copy/download/decode, content checks,
audio length), ComfyClient.stage (hard links into ComfyUI's input/, a temp folder here) and
build_graph. After ComfyUI: probe_video of the result MP4 and delivery.deliver (base64 inline,
or a volume copy above RESPONSE_LIMIT_MB).

Baselines, measured in the same run on the same bytes: shutil.copyfile of both files (path), a
plain streamed requests.get of both URLs to files (url), base64.b64decode of both payloads to
files (base64, data URI), and read + b64encode of the MP4 (delivery, as bench_delivery.py; a
shutil.copyfile where the result is too big to go inline and is copied to the volume).
Every figure is the median over `--repeat` runs, in ms, with its ratio to that baseline.

Downloads: rp_ssrf refuses loopback addresses, so this bench lets 127.0.0.1 (and nothing else
new) through the way tests/test_media.py's `loopback_allowed` fixture does, by wrapping
`rp_ssrf.is_safe_address`; proxy variables are unset in this process, as that test's server
fixture does. Peak RSS growth is this process's (ffprobe children not counted) over one extra
untimed run, after glibc's malloc_trim: Linux's high-water mark VmHWM, reset before the run,
or psutil sampling where that reset is not available.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import functools
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_delivery import make_video  # noqa: E402
from infinitetalk_worker import delivery  # noqa: E402
from infinitetalk_worker.comfy import ComfyClient  # noqa: E402
from infinitetalk_worker.media import DOWNLOAD_CHUNK, prepare_media, probe_video  # noqa: E402
from infinitetalk_worker.pipeline import Generated, JobContext  # noqa: E402
from infinitetalk_worker.request import parse_request  # noqa: E402
from infinitetalk_worker.settings import MiB, Settings  # noqa: E402
from infinitetalk_worker.workflows import build_graph, files_to_stage  # noqa: E402
from runpod.serverless.utils import rp_ssrf  # noqa: E402
from tests import mediagen  # noqa: E402

KINDS = ("path", "url", "base64", "data URI")
BEFORE = ("parse_request", "prepare_media", "stage_files", "build_graph")
MIME = {".jpg": "image/jpeg", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
        ".flac": "audio/flac", ".ogg": "audio/ogg"}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS")


# --- measuring -----------------------------------------------------------------------------


def _malloc_trim() -> Callable[[], None]:
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


TRIM = _malloc_trim()


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1))


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") > 0
    except (OSError, AttributeError):
        return False


class PeakRss:
    """Peak RSS growth of this process over a `with` block: Linux's own high-water mark (VmHWM,
    reset through /proc/self/clear_refs), else psutil sampling every millisecond (which misses
    peaks inside calls that hold the GIL)."""

    exact = _can_reset_peak()

    def __init__(self):
        self.process = psutil.Process()
        self.growth_mb = 0.0

    def __enter__(self) -> "PeakRss":
        TRIM()  # hand freed memory back, so reuse of earlier garbage does not hide growth
        self.start = self.peak = self.process.memory_info().rss
        if self.exact:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.exact:
            self.peak = _status_kb("VmHWM") * 1024
        else:
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.set()
            self._thread.join()
        self.growth_mb = max(0, self.peak - self.start) / MiB


def timed(fn: Callable[[], dict[str, float]], repeat: int) -> tuple[dict[str, float], float]:
    """Median ms per stage over `repeat` runs of `fn` (which returns ms per stage), after one
    untimed run that also gives the peak RSS growth in MB."""
    with PeakRss() as rss:
        fn()
    runs = [fn() for _ in range(repeat)]
    return {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}, rss.growth_mb


class Clock:
    def __init__(self):
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = (now - self._last) * 1000
        self._last = now


# --- the worker's side and the baselines --------------------------------------------------


class Worker:
    """The stages of Pipeline.generate up to the ComfyUI run, on a settings-only setup."""

    def __init__(self, settings: Settings, expected_seconds: float):
        self.settings = settings
        self.client = ComfyClient(settings)  # stage/cleanup only: no request to ComfyUI
        self.expected = expected_seconds
        self.runs = 0

    def before_comfy(self, job_input: dict) -> dict[str, float]:
        self.runs += 1
        tag = f"rp-bench-{self.runs}"
        job_dir = self.settings.work_dir.resolve() / tag
        job_dir.mkdir(parents=True)
        try:
            clock = Clock()
            request = parse_request(job_input, self.settings)
            clock.lap("parse_request")
            media = prepare_media(request, self.settings, job_dir)
            clock.lap("prepare_media")
            staged = self.client.stage(tag, files_to_stage(request, media))
            clock.lap("stage_files")
            long_form = media.audio_seconds > self.settings.longform_threshold_s
            build_graph(request, media, staged, self.settings, prefix=f"{tag}/infinitetalk",
                        frames_dir=job_dir / "frames" if long_form else None)
            clock.lap("build_graph")
        finally:
            self.client.cleanup(tag)
            shutil.rmtree(job_dir, ignore_errors=True)
        assert abs(media.audio_seconds - self.expected) < 0.1, media.audio_seconds
        assert not media.warnings, media.warnings
        clock.ms["before ComfyUI"] = sum(clock.ms[s] for s in BEFORE)
        return clock.ms


def baseline(kind: str, sources: list[tuple[str, str]], scratch: Path) -> Callable[[], dict[str, float]]:
    """The bare transfer of the job's bytes into files; `sources` are (value, file name)."""

    def run() -> dict[str, float]:
        dest = Path(tempfile.mkdtemp(dir=scratch))
        try:
            start = time.perf_counter()
            for value, name in sources:
                if kind == "path":
                    shutil.copyfile(value, dest / name)
                elif kind == "url":
                    with requests.get(value, stream=True, timeout=30) as response:
                        response.raise_for_status()
                        with open(dest / name, "wb") as out:
                            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                                out.write(chunk)
                else:
                    payload = value.split(",", 1)[1] if kind == "data URI" else value
                    (dest / name).write_bytes(base64.b64decode(payload))
            return {"baseline": (time.perf_counter() - start) * 1000}
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    return run


def job_input(kind: str, files: list[tuple[str, Path]], url_base: str) -> tuple[dict, list[tuple[str, str]]]:
    """The job's input for one input kind, and the same sources for the baseline."""
    fields = {"image": ("image_path", "image_url", "image_base64"),
              "audio": ("wav_path", "wav_url", "wav_base64")}
    job = {"seed": 1234, "prompt": "A woman talking to the camera"}
    sources = []
    for medium, path in files:
        name_path, name_url, name_b64 = fields[medium]
        if kind == "path":
            job[name_path] = value = str(path)
        elif kind == "url":
            job[name_url] = value = f"{url_base}/{path.name}"
        else:
            value = base64.b64encode(path.read_bytes()).decode("ascii")
            if kind == "data URI":
                value = f"data:{MIME[path.suffix]};base64,{value}"
            job[name_b64] = value
        sources.append((value, path.name))
    return job, sources


def serve(folder: Path) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


def allow_loopback() -> None:
    """What tests/test_media.py's `loopback_allowed` fixture does, for this process."""
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    strict = rp_ssrf.is_safe_address
    rp_ssrf.is_safe_address = lambda ip: ip == "127.0.0.1" or strict(ip)


# --- printing ------------------------------------------------------------------------------


def cell(ms: float, base: float | None = None) -> str:
    if base is None:
        return f"{ms:9.2f}"
    ratio = ms / base if base > 0 else float("inf")
    shown = f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"
    return f"{ms:9.2f} ({shown:>5})"


def kb(path: Path) -> str:
    return f"{path.stat().st_size / 1024:,.0f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60],
                        help="lengths of the speech audio")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--image-size", type=int, default=1024, help="portrait width and height")
    parser.add_argument("--audio-format", default="wav",
                        choices=[s.lstrip(".") for s in mediagen.AUDIO_SUFFIXES])
    parser.add_argument("--sample-rate", type=int, default=44100, help="of the speech (mono)")
    parser.add_argument("--result-mb", type=int, nargs="+", default=[1, 7],
                        help="sizes of the result MP4 for delivery (RESPONSE_LIMIT_MB is 10 "
                             "of base64, about 7.5 MB of MP4)")
    args = parser.parse_args()
    if not mediagen.have_tools():
        raise SystemExit("needs ffmpeg, ffprobe and espeak-ng on PATH")

    allow_loopback()
    logging.getLogger("infinitetalk").setLevel(logging.WARNING)  # no per-job lines between rows
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        root = Path(tmp)
        volume, scratch = root / "runpod-volume", root / "scratch"
        volume.mkdir()
        scratch.mkdir()
        settings = Settings(volume_dir=volume, work_dir=root / "jobs", comfy_dir=root / "comfyui",
                            output_dir=root / "results")
        image = mediagen.portrait(volume / "portrait.jpg", args.image_size, args.image_size)
        httpd = serve(volume)
        url_base = f"http://127.0.0.1:{httpd.server_address[1]}"

        load = os.getloadavg()[0]
        print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start; median of {args.repeat} "
              f"runs, ms (ratio to the baseline of the same row)")
        print("url: 127.0.0.1 let through rp_ssrf by wrapping rp_ssrf.is_safe_address, as "
              "tests/test_media.py's loopback_allowed fixture does; proxy variables unset")
        print(f"portrait {args.image_size}x{args.image_size} JPEG, {kb(image)}; baselines: path "
              "copyfile, url requests.get to file, base64/data URI b64decode to file; result: "
              "read + b64encode (inline) or copyfile (volume copy)")
        print()
        header = (f"{'audio':>12} {'input':>9} {'baseline':>9} "
                  + " ".join(f"{s:>17}" for s in (*BEFORE, "before ComfyUI"))
                  + f" {'peak RSS +MB':>16}")
        print(header)
        for seconds in args.seconds:
            audio = mediagen.speech(volume / f"speech-{seconds:g}s.{args.audio_format}",
                                    seconds=seconds, sample_rate=args.sample_rate)
            files = [("image", image), ("audio", audio)]
            label = f"{seconds:g} s {args.audio_format.upper()}"
            worker = Worker(settings, seconds)
            for kind in KINDS:
                job, sources = job_input(kind, files, url_base)
                base, base_rss = timed(baseline(kind, sources, scratch), args.repeat)
                ours, our_rss = timed(lambda: worker.before_comfy(job), args.repeat)
                b = base["baseline"]
                print(f"{label if kind == KINDS[0] else kb(audio) if kind == KINDS[1] else '':>12} "
                      f"{kind:>9} {cell(b)} "
                      + " ".join(cell(ours[s], b) for s in (*BEFORE, "before ComfyUI"))
                      + f" {our_rss:>7.1f} / {base_rss:<6.1f}")
        httpd.shutdown()
        httpd.server_close()

        print()
        print(f"{'result MP4':>12} {'delivered as':>14} {'baseline':>15} "
              f"{'probe_video':>17} {'deliver':>17} {'after ComfyUI':>17} {'peak RSS +MB':>16}")
        request = parse_request({"seed": 1234}, settings)
        ctx = JobContext(job_id="bench")
        for megabytes in args.result_mb:
            video = root / f"result-{megabytes}.mp4"
            make_video(video, megabytes)
            generated = Generated(video=video, metadata={"seed": 1234, "workflow": "I2V_single"},
                                  warnings=[])
            kept: dict = {}

            def after() -> dict[str, float]:
                clock = Clock()
                info = probe_video(video)
                clock.lap("probe_video")
                kept["result"] = delivery.deliver(generated, request, settings, ctx)
                clock.lap("deliver")
                assert info is not None and info.frames > 0
                kept.clear()
                clock.ms["after ComfyUI"] = clock.ms["probe_video"] + clock.ms["deliver"]
                return clock.ms

            inline = (delivery.base64_size(video.stat().st_size)
                      <= settings.response_limit_mb * MiB)

            def bare() -> dict[str, float]:
                start = time.perf_counter()
                if inline:
                    base64.b64encode(video.read_bytes()).decode("ascii")
                else:
                    copy = scratch / video.name
                    shutil.copyfile(video, copy)
                    copy.unlink()
                return {"baseline": (time.perf_counter() - start) * 1000}

            base, base_rss = timed(bare, args.repeat)
            ours, our_rss = timed(after, args.repeat)
            how = "base64 inline" if inline else "volume copy"
            b = base["baseline"]
            print(f"{video.stat().st_size / MiB:>9.1f} MB {how:>14} {cell(b):>15} "
                  + " ".join(cell(ours[s], b) for s in ("probe_video", "deliver", "after ComfyUI"))
                  + f" {our_rss:>7.1f} / {base_rss:<6.1f}")
    print()
    print("ratio: the stage's median over the baseline's median of the same row; the totals are "
          "medians of the per-run totals, not sums of the medians")
    how = "VmHWM" if PeakRss.exact else "psutil sampling, approximate"
    print(f"peak RSS +MB: worker / baseline, growth of this process over one untimed run ({how})")


if __name__ == "__main__":
    main()
