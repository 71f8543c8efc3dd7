"""Regenerate the bundled example media from public-domain sources.

    .venv/bin/python examples/make_examples.py

Needs scikit-image (the astronaut photo), Pillow, espeak-ng and ffmpeg. Writes, next to this
script: portrait.jpg, speech.wav and talking.mp4 (see README.md).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from PIL import Image
from skimage import data

HERE = Path(__file__).resolve().parent
SIZE = 384  # small, and a multiple of 16 like the model's grid
FPS = 25
VIDEO_SECONDS = 3
TEXT = "Hello! This is the example voice. Send your own audio."


def make_portrait(path: Path) -> None:
    # Face and upper body of the 512x512 astronaut photo (Eileen Collins, NASA).
    crop = data.astronaut()[0:400, 60:460]
    Image.fromarray(crop).resize((SIZE, SIZE), Image.LANCZOS).save(path, quality=88)


def make_speech(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), TEXT],
                       check=True, capture_output=True)
        _ffmpeg("-i", raw, "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le",
                "-map_metadata", "-1", "-fflags", "+bitexact", path)


def make_video(path: Path, portrait: Path, speech: Path) -> None:
    # A slow zoom on the portrait so that the clip has motion, with the speech as its sound.
    zoom = (f"zoompan=z='1+0.0015*on':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
            f":d=1:s={SIZE}x{SIZE}:fps={FPS},format=yuv420p")
    _ffmpeg("-loop", "1", "-framerate", str(FPS), "-i", portrait, "-i", speech,
            "-vf", zoom, "-c:v", "libx264", "-preset", "medium", "-crf", "26",
            "-c:a", "aac", "-b:a", "64k", "-t", str(VIDEO_SECONDS), "-map_metadata", "-1",
            "-movflags", "+faststart", path)


def _ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    *map(str, args)], check=True)


def main() -> None:
    portrait, speech, video = HERE / "portrait.jpg", HERE / "speech.wav", HERE / "talking.mp4"
    make_portrait(portrait)
    make_speech(speech)
    make_video(video, portrait, speech)
    for path in (portrait, speech, video):
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
