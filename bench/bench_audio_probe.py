"""How long `media.audio_duration` takes on a 10-minute MP3, against a full decode.

    .venv/bin/python bench/bench_audio_probe.py [--minutes 10] [--repeat 5]

The baseline is what a worker without a header probe does: `librosa.load` decodes the whole
file to count its samples. Both run in the same process on the same file, in the same run; the
figures are printed as a ratio, with the two durations they found (they must agree).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from infinitetalk_worker.media import audio_duration  # noqa: E402
from tests import mediagen  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median seconds, result) over `repeat` calls."""
    times, result = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5, help="calls of the probe (median)")
    args = parser.parse_args()

    import librosa

    with tempfile.TemporaryDirectory() as tmp:
        mp3 = mediagen.speech(Path(tmp) / "long.mp3", seconds=args.minutes * 60,
                              sample_rate=44100)
        size_mb = mp3.stat().st_size / 1e6
        probe_s, probe_len = timed(lambda: audio_duration(mp3), args.repeat)

        def full_decode() -> float:
            samples, rate = librosa.load(str(mp3), sr=None, mono=True)
            return len(samples) / rate

        decode_s, decode_len = timed(full_decode, 1)

    print(f"file: {args.minutes:g} min MP3, 44.1 kHz, {size_mb:.1f} MB")
    print(f"audio_duration (header):  {probe_s * 1000:9.2f} ms  -> {probe_len:.2f} s")
    print(f"librosa.load (decode):    {decode_s * 1000:9.2f} ms  -> {decode_len:.2f} s")
    print(f"ratio: audio_duration is {decode_s / probe_s:,.0f}x faster than a full decode "
          f"({probe_s / decode_s:.1e} of its time); lengths differ by "
          f"{abs(probe_len - decode_len) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
