"""Base64 delivery of a ~100 MB MP4: time and peak memory, against a bare read-and-encode.

    .venv/bin/python bench/bench_delivery.py [--mb 100]

Each method runs in a fresh Python process so its peak RSS is its own; both are measured in
the same run on the same file, and the figures are printed as ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_MEASURE = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
path = Path({path!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if {method!r} == "baseline":
    import base64
    text = base64.b64encode(path.read_bytes()).decode("ascii")
else:
    from infinitetalk_worker.delivery import encode_base64
    text = encode_base64(path)
took = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": took, "peak_mb": (peak - before) / 1024, "chars": len(text)}}))
"""


def make_video(path: Path, megabytes: int) -> None:
    # Noise does not compress, so the file size follows the duration closely (~1 MB/s here).
    seconds = max(1, megabytes * 8 // 9)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "nullsrc=s=640x360:r=25",
         "-vf", "geq=random(1)*255:128:128", "-t", str(seconds), "-c:v", "libx264",
         "-preset", "ultrafast", "-b:v", "8M", "-maxrate", "8M", "-bufsize", "16M", str(path)],
        check=True,
    )


def measure(method: str, path: Path) -> dict:
    code = _MEASURE.format(repo=str(REPO), path=str(path), method=method)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the test MP4 in MB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "big.mp4"
        make_video(video, args.mb)
        size_mb = video.stat().st_size / 1024 / 1024
        base = measure("baseline", video)
        ours = measure("delivery", video)
    assert base["chars"] == ours["chars"]
    print(f"MP4 of {size_mb:.1f} MB -> {ours['chars'] / 1024 / 1024:.1f} MB of base64")
    print(f"{'method':<28}{'seconds':>10}{'peak MB':>10}")
    print(f"{'read + b64encode (baseline)':<28}{base['seconds']:>10.2f}{base['peak_mb']:>10.0f}")
    print(f"{'delivery.encode_base64':<28}{ours['seconds']:>10.2f}{ours['peak_mb']:>10.0f}")
    print(
        f"ratio to baseline: time {ours['seconds'] / base['seconds']:.2f}x, "
        f"peak memory {ours['peak_mb'] / base['peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
