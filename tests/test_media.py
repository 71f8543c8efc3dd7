"""Media resolution through `parse_request` + `prepare_media`, with real files: paths confined to
the allowed roots, SSRF-safe downloads with size and time caps, base64 and data URIs, content
sniffing, durations and frame counts, the multi-speaker mux, the bundled examples, and the
battery of bad inputs (tests/bad_inputs.py)."""

from __future__ import annotations

import base64
import math
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from runpod.serverless.utils import rp_ssrf

from infinitetalk_worker.errors import InputError
from infinitetalk_worker.media import (
    EXAMPLE_AUDIO,
    EXAMPLE_IMAGE,
    EXAMPLE_VIDEO,
    audio_duration,
    prepare_media,
)
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.settings import Settings
from tests import mediagen
from tests.bad_inputs import bad_inputs, battery_settings

pytestmark = pytest.mark.skipif(not mediagen.have_tools(), reason="needs ffmpeg and espeak-ng")


def run(job: dict, settings: Settings, job_dir: Path):
    return prepare_media(parse_request(job, settings), settings, job_dir)


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def volume(tmp_path) -> Path:
    folder = tmp_path / "runpod-volume"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(volume, tmp_path) -> Settings:
    return Settings(volume_dir=volume, work_dir=tmp_path / "jobs")


@pytest.fixture
def job_dir(tmp_path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory) -> dict[str, Path]:
    """Two seconds of speech in every audio container."""
    folder = tmp_path_factory.mktemp("speech")
    return {s: mediagen.speech(folder / f"speech{s}", "Testing one two three", seconds=2.0)
            for s in mediagen.AUDIO_SUFFIXES}


# --- the battery ----------------------------------------------------------------------------


def test_every_bad_input_names_its_field_and_leaves_no_file(tmp_path):
    cases = bad_inputs(tmp_path)
    assert len(cases) >= 40
    settings = Settings(**battery_settings(tmp_path))
    volume_before = files_under(tmp_path / "volume")
    problems = []
    for i, (name, job, field) in enumerate(cases):
        job_dir = tmp_path / "jobs" / f"case{i}"
        job_dir.mkdir(parents=True)
        try:
            media = run(job, settings, job_dir)
        except InputError as err:
            message = str(err)
            if err.field != field or not message.startswith(f"{field}: "):
                problems.append(f"{name}: expected field {field}, got {message!r}")
            if "\n" in message or "Traceback" in message or len(message) > 400:
                problems.append(f"{name}: not one short sentence: {message!r}")
            for value in (job.values() if isinstance(job, dict) else []):
                if isinstance(value, str) and len(value) > 100 and value[-60:] in message:
                    problems.append(f"{name}: the message quotes the payload")
        else:
            problems.append(f"{name}: accepted ({media})")
        if list(job_dir.iterdir()):
            problems.append(f"{name}: left {files_under(job_dir)}")
    assert files_under(tmp_path / "volume") == volume_before
    assert not problems, "\n".join(problems)


def test_a_failure_after_a_decoded_file_removes_it_and_keeps_other_files(
        settings, volume, job_dir, speech_files):
    mediagen.truncated(speech_files[".wav"], volume / "broken.wav", size=30)
    (job_dir / "pipeline-owned.txt").write_text("kept")
    job = {"person_count": "multi", "wav_base64": b64(speech_files[".mp3"]),
           "wav_path_2": str(volume / "broken.wav")}
    with pytest.raises(InputError, match="^wav_path_2: "):
        run(job, settings, job_dir)
    assert files_under(job_dir) == ["pipeline-owned.txt"]


# --- audio --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", mediagen.AUDIO_SUFFIXES)
@pytest.mark.parametrize("kind", ["path", "base64", "data_uri"])
def test_every_audio_format_from_every_source(settings, volume, job_dir, speech_files,
                                              suffix, kind):
    src = speech_files[suffix]
    if kind == "path":
        job = {"wav_path": str(shutil.copy(src, volume / src.name))}
    elif kind == "base64":
        job = {"wav_base64": b64(src)}
    else:
        job = {"wav_base64": f"data:audio/whatever;base64,{b64(src)}"}
    media = run(job, settings, job_dir)
    assert media.audio_seconds == pytest.approx(2.0, abs=0.05)
    assert media.frames == math.ceil(round(media.audio_seconds * 25, 6))
    assert media.fps == 25.0 and media.mux_audio == media.audio
    assert media.audio.suffix == suffix and media.audio.read_bytes() == src.read_bytes()
    assert media.warnings == ["image: none given, used the bundled example portrait "
                              "(examples/portrait.jpg)"]


@pytest.mark.parametrize("suffix", mediagen.AUDIO_SUFFIXES)
def test_audio_duration_reads_headers_of_every_format(tmp_path, suffix):
    path = mediagen.tone(tmp_path / f"t{suffix}", 37.5)
    assert audio_duration(path) == pytest.approx(37.5, abs=0.05)


def test_audio_duration_refuses_what_is_not_audio(tmp_path):
    with pytest.raises(ValueError, match="not readable audio"):
        audio_duration(mediagen.portrait(tmp_path / "p.png", 64, 64))


def test_the_content_not_the_name_decides(settings, volume, job_dir, speech_files):
    png_named_jpg = mediagen.portrait(volume / "p.png", 400, 480).rename(volume / "face.jpg")
    mp3_named_wav = shutil.copy(speech_files[".mp3"], volume / "voice.wav")
    media = run({"image_path": str(png_named_jpg), "wav_path": str(mp3_named_wav)},
                settings, job_dir)
    assert media.image == job_dir / "image.png"
    assert media.audio == job_dir / "audio.mp3"
    assert media.image.read_bytes() == png_named_jpg.read_bytes()
    assert media.audio_seconds == pytest.approx(2.0, abs=0.15)


def test_long_audio_is_refused_with_the_cap(settings, volume, job_dir):
    mediagen.tone(volume / "long.flac", 12.0)
    with pytest.raises(InputError) as err:
        run({"wav_path": str(volume / "long.flac")}, settings.replace(max_audio_s=10), job_dir)
    assert str(err.value) == "wav_path: the audio lasts 12.0 s, above the 10 s limit (MAX_AUDIO_S)"


def test_max_frame_overrides_the_audio_length(settings, job_dir):
    media = run({"max_frame": 33}, settings, job_dir)
    assert media.frames == 33
    assert not any(w.startswith("max_frame") for w in media.warnings)


def test_max_frame_past_the_audio_is_cut_to_the_audio_with_a_warning(settings, job_dir):
    media = run({"max_frame": 5000}, settings, job_dir)
    assert media.frames == math.ceil(round(media.audio_seconds * media.fps, 6)) < 5000
    assert any(w.startswith("max_frame: 5000 is more than the audio's") for w in media.warnings)


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("kind", ["path", "base64", "data_uri"])
def test_every_image_format_from_every_source(settings, volume, job_dir, suffix, kind):
    src = mediagen.portrait(volume / f"face{suffix}", 480, 640)
    job = {"path": {"image_path": str(src)}, "base64": {"image_base64": b64(src)},
           "data_uri": {"image_base64": f"data:image/x;base64,{b64(src)}"}}[kind]
    media = run(job, settings, job_dir)
    assert media.image.suffix == suffix
    with Image.open(media.image) as image:
        assert image.size == (480, 640)
    assert media.video is None and media.video_info is None
    assert (media.image.parent == job_dir) == (kind != "path")


# --- videos -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, fps, audio", [(".mp4", 25, True), (".mov", 30, True), (".mkv", 24, True),
                           (".webm", 30, False)])
def test_v2v_takes_the_source_videos_frame_rate(settings, volume, job_dir, speech_files,
                                                suffix, fps, audio):
    clip = mediagen.video(volume / f"clip{suffix}", 1.0, fps=fps, width=320, height=240,
                          audio=audio)
    job = {"input_type": "video", "video_path": str(clip),
           "wav_path": str(shutil.copy(speech_files[".wav"], volume / "s.wav"))}
    media = run(job, settings, job_dir)
    info = media.video_info
    assert (info.width, info.height, info.has_audio) == (320, 240, audio)
    assert info.fps == pytest.approx(fps) and media.fps == pytest.approx(fps)
    assert info.frames == pytest.approx(fps * 1.0, abs=1)
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert media.frames == math.ceil(round(2.0 * fps, 6))
    assert media.image is None and media.video == clip.resolve()


@pytest.mark.parametrize("rotation, display", [(0, (320, 176)), (90, (176, 320)), (270, (176, 320)),
                                               (180, (320, 176))])
def test_v2v_reports_the_rotation_decoders_apply(settings, volume, job_dir, speech_files, rotation, display):
    """Phones store upright clips as landscape frames plus a display matrix; ffmpeg and OpenCV
    (VHS_LoadVideo) hand the frames on turned, so the graph must size the load by display_size."""
    clip = mediagen.video(volume / "upright.mp4", 1.0, width=320, height=176, rotation=rotation)
    job = {"input_type": "video", "video_path": str(clip),
           "wav_path": str(shutil.copy(speech_files[".wav"], volume / "s.wav"))}
    info = run(job, settings, job_dir).video_info
    assert (info.width, info.height) == (320, 176)          # as stored
    assert info.rotation == rotation or (rotation % 180 and info.rotation == 360 - rotation)
    assert info.display_size == display


def test_v2v_video_by_base64(settings, job_dir, tmp_path):
    clip = mediagen.video(tmp_path / "c.mp4", 1.0, fps=30, width=160, height=120)
    media = run({"input_type": "video", "video_base64": b64(clip)}, settings, job_dir)
    assert media.video == job_dir / "video.mp4" and media.fps == 30.0


# --- two speakers -------------------------------------------------------------------------------


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.fixture
def two_tones(volume) -> tuple[Path, Path]:
    return (mediagen.tone(volume / "low.wav", 2.0, freq=300),
            mediagen.tone(volume / "high.mp3", 3.0, freq=1000))


def test_para_mixes_both_speakers_over_the_longest(settings, job_dir, two_tones):
    low, high = two_tones
    media = run({"person_count": "multi", "wav_path": str(low), "wav_path_2": str(high)},
                settings, job_dir)
    assert media.audio_2 == high.resolve() and media.mux_audio.parent == job_dir
    assert media.audio_seconds == pytest.approx(3.0, abs=0.1)
    assert media.frames == math.ceil(round(media.audio_seconds * 25, 6))
    mix, rate = soundfile.read(media.mux_audio)
    both = np.abs(np.fft.rfft(mix[: rate]))
    freqs = np.fft.rfftfreq(rate, 1 / rate)
    assert both[np.abs(freqs - 300) < 5].max() > 0.2 * both.max()
    assert both[np.abs(freqs - 1000) < 5].max() > 0.2 * both.max()
    assert _dominant_hz(mix[int(2.3 * rate): int(2.8 * rate)], rate) == pytest.approx(1000, abs=5)


def test_add_puts_speaker_2_after_speaker_1(settings, job_dir, two_tones):
    low, high = two_tones
    media = run({"person_count": "multi", "multi_audio_type": "add", "wav_path": str(low),
                 "wav_path_2": str(high)}, settings, job_dir)
    assert media.audio_seconds == pytest.approx(5.0, abs=0.1)
    assert media.frames == math.ceil(round(media.audio_seconds * 25, 6))
    mix, rate = soundfile.read(media.mux_audio)
    assert _dominant_hz(mix[int(0.5 * rate): int(1.5 * rate)], rate) == pytest.approx(300, abs=5)
    assert _dominant_hz(mix[int(3.0 * rate): int(4.0 * rate)], rate) == pytest.approx(1000, abs=5)


def test_missing_speaker_2_speaks_speaker_1s_audio(settings, job_dir, two_tones):
    low, _ = two_tones
    media = run({"person_count": "multi", "wav_path": str(low), "wav_path_2": ""},
                settings, job_dir)
    assert media.audio_2.parent == job_dir
    assert media.audio_2.read_bytes() == low.read_bytes()
    assert media.mux_audio == media.audio  # "para" of one voice with itself is that voice
    assert media.audio_seconds == pytest.approx(2.0, abs=0.01)
    assert "audio_2: none given, speaker 2 uses speaker 1's audio" in media.warnings

    added = run({"person_count": "multi", "multi_audio_type": "add", "wav_path": str(low)},
                settings, job_dir.parent / "job-add")
    assert added.audio_seconds == pytest.approx(4.0, abs=0.05)


def test_add_longer_than_the_cap_names_multi_audio_type(settings, job_dir, two_tones):
    low, high = two_tones
    with pytest.raises(InputError, match=r"^multi_audio_type: .* 5\.0 s together, above the "
                                         r"4 s limit \(MAX_AUDIO_S\)"):
        run({"person_count": "multi", "multi_audio_type": "add", "wav_path": str(low),
             "wav_path_2": str(high)}, settings.replace(max_audio_s=4), job_dir)
    assert list(job_dir.iterdir()) == []


# --- bundled examples and allowed roots ---------------------------------------------------------


def test_absent_media_use_the_bundled_examples_with_warnings(settings, job_dir):
    media = run({}, settings, job_dir)
    assert (media.image, media.audio) == (EXAMPLE_IMAGE, EXAMPLE_AUDIO)
    assert media.warnings == [
        "image: none given, used the bundled example portrait (examples/portrait.jpg)",
        "audio: none given, used the bundled example speech (examples/speech.wav)",
    ]
    video = run({"input_type": "video"}, settings, job_dir)
    assert video.video == EXAMPLE_VIDEO and video.video_info.has_audio
    assert video.warnings[0] == ("video: none given, used the bundled example video "
                                 "(examples/talking.mp4)")
    assert list(job_dir.iterdir()) == []


def test_bundled_examples_pass_the_same_checks_as_user_files(settings, job_dir):
    job = {"image_path": str(EXAMPLE_IMAGE), "wav_path": str(EXAMPLE_AUDIO)}
    media = run(job, settings, job_dir)
    assert media.warnings == [] and media.image == EXAMPLE_IMAGE
    assert 2.0 < media.audio_seconds < 8.0
    video = run({"input_type": "video", "video_path": str(EXAMPLE_VIDEO)}, settings, job_dir)
    assert video.video_info.fps == 25.0 and 2.0 <= video.video_info.duration_s <= 3.5


def test_a_missing_volume_is_named_in_the_error(tmp_path, job_dir):
    settings = Settings(volume_dir=tmp_path / "not-mounted")
    with pytest.raises(InputError) as err:
        run({"wav_path": str(tmp_path / "not-mounted" / "a.wav")}, settings, job_dir)
    assert str(err.value).endswith(f"a.wav does not exist (no network volume is mounted at "
                                   f"{tmp_path / 'not-mounted'})")


def test_relative_paths_and_symlinks_inside_the_roots(settings, volume, job_dir, tmp_path):
    (volume / "faces").mkdir()
    face = mediagen.portrait(volume / "faces" / "me.webp", 256, 256)
    (volume / "latest.webp").symlink_to(face)
    assert run({"image_path": "faces/me.webp"}, settings, job_dir).image == face
    assert run({"image_path": str(volume / "latest.webp")}, settings, job_dir).image == face
    extra = tmp_path / "extra-root"
    extra.mkdir()
    other = mediagen.portrait(extra / "other.png", 64, 64)
    with pytest.raises(InputError, match="^image_path: .* is outside the folders"):
        run({"image_path": str(other)}, settings, job_dir)
    widened = settings.replace(extra_input_roots=(extra,))
    assert run({"image_path": str(other)}, widened, job_dir).image == other


# --- downloads ----------------------------------------------------------------------------------


class _Routes(BaseHTTPRequestHandler):
    routes: dict[str, tuple] = {}
    seen: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.seen.append(self.path)
        kind, *args = self.routes.get(self.path, ("status", 404))
        try:
            getattr(self, f"_{kind}")(*args)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _file(self, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _unsized(self, data: bytes) -> None:  # no Content-Length: the body itself must be capped
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.end_headers()

    def _status(self, code: int) -> None:
        self.send_error(code)

    def _stall(self, seconds: float) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        time.sleep(seconds)

    def _trickle(self, seconds: float) -> None:
        # A byte every 50 ms: every read returns long before a socket timeout.
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.wfile.write(b"\0")
            self.wfile.flush()
            time.sleep(0.05)


@pytest.fixture
def server(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"):
        monkeypatch.delenv(var, raising=False)
    routes: dict[str, tuple] = {}
    seen: list[str] = []
    handler = type("Handler", (_Routes,), {"routes": routes, "seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.routes, httpd.seen = routes, seen
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch):
    """Test-only: let rp_ssrf accept 127.0.0.1 (this test's server) and nothing else new."""
    strict = rp_ssrf.is_safe_address
    monkeypatch.setattr(rp_ssrf, "is_safe_address", lambda ip: ip == "127.0.0.1" or strict(ip))


def test_loopback_urls_are_refused_without_a_connection(server, settings, job_dir, speech_files):
    server.routes["/speech.wav"] = ("file", speech_files[".wav"].read_bytes())
    with pytest.raises(InputError) as err:
        run({"wav_url": f"{server.base}/speech.wav"}, settings, job_dir)
    assert str(err.value) == "wav_url: download refused, 127.0.0.1 is a loopback address"
    assert server.seen == [] and list(job_dir.iterdir()) == []


def test_download_succeeds_and_content_decides(server, loopback_allowed, settings, job_dir,
                                               speech_files, volume):
    server.routes["/voice.png"] = ("file", speech_files[".mp3"].read_bytes(), "image/png")
    face = mediagen.portrait(volume / "f.webp", 320, 320)
    server.routes["/face"] = ("file", face.read_bytes(), "text/plain")
    server.routes["/moved"] = ("redirect", "/face")
    media = run({"wav_url": f"{server.base}/voice.png", "image_url": f"{server.base}/moved"},
                settings, job_dir)
    assert media.audio == job_dir / "audio.mp3"
    assert media.audio.read_bytes() == speech_files[".mp3"].read_bytes()
    assert media.image == job_dir / "image.webp"
    assert media.audio_seconds == pytest.approx(2.0, abs=0.15)
    assert server.seen == ["/moved", "/face", "/voice.png"]


@pytest.mark.parametrize(
    "location, says",
    [("http://10.0.0.5/a.png", "the server redirected to 10.0.0.5, a private address"),
     ("http://169.254.169.254/latest/meta-data/",
      "the server redirected to 169.254.169.254, the cloud metadata address"),
     ("http://127.0.0.2:9/a.png", "the server redirected to 127.0.0.2, a loopback address"),
     ("file:///etc/passwd", "the server redirected to a URL that is not http(s)")],
)
def test_redirects_to_refused_addresses_are_refused(server, loopback_allowed, settings,
                                                    job_dir, location, says):
    server.routes["/go"] = ("redirect", location)
    with pytest.raises(InputError) as err:
        run({"image_url": f"{server.base}/go"}, settings, job_dir)
    assert str(err.value) == f"image_url: download refused, {says}"
    assert server.seen == ["/go"] and list(job_dir.iterdir()) == []


@pytest.mark.parametrize("route", ["file", "unsized"])
def test_size_cap_reported_in_the_error(server, loopback_allowed, settings, job_dir, tmp_path,
                                        route):
    big = mediagen.noise(tmp_path / "big.wav", 50.0)  # 1.6 MB
    server.routes["/big.wav"] = (route, big.read_bytes())
    with pytest.raises(InputError) as err:
        run({"wav_url": f"{server.base}/big.wav"}, settings.replace(max_download_mb=1), job_dir)
    assert str(err.value) == ("wav_url: the file is larger than the 1 MB download limit "
                              "(MAX_DOWNLOAD_MB)")
    assert list(job_dir.iterdir()) == []


@pytest.mark.parametrize("route", ["stall", "trickle"])
def test_time_cap_reported_in_the_error(server, loopback_allowed, settings, job_dir, route):
    server.routes["/slow.wav"] = (route, 4.0)
    with pytest.raises(InputError) as err:
        run({"wav_url": f"{server.base}/slow.wav"}, settings.replace(download_timeout_s=1),
            job_dir)
    assert str(err.value).startswith("wav_url: the ")
    assert "1 s limit (DOWNLOAD_TIMEOUT_S)" in str(err.value)
    assert list(job_dir.iterdir()) == []


def test_http_errors_and_wrong_content_name_the_field(server, loopback_allowed, settings,
                                                      job_dir, speech_files):
    with pytest.raises(InputError, match=r"^image_url: the server answered HTTP 404 Not Found$"):
        run({"image_url": f"{server.base}/nothing.png"}, settings, job_dir)
    server.routes["/face.jpg"] = ("file", speech_files[".wav"].read_bytes(), "image/jpeg")
    with pytest.raises(InputError, match=r"^image_url: the file is WAV audio, not a JPEG"):
        run({"image_url": f"{server.base}/face.jpg"}, settings, job_dir)
    assert list(job_dir.iterdir()) == []


def test_private_addresses_stay_refused_when_loopback_is_allowed(loopback_allowed, settings,
                                                                 job_dir):
    # The fixture above is narrow: everything but this test server's address is still checked.
    with pytest.raises(InputError, match=r"^image_url: download refused, 10\.1\.2\.3 is a "
                                         r"private address$"):
        run({"image_url": "http://10.1.2.3/a.png"}, settings, job_dir)


def test_proxy_settings_do_not_silently_bypass_the_check(monkeypatch, settings, job_dir):
    # rp_ssrf cannot pin the address through a proxy, so it refuses rather than fetch unchecked.
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(InputError, match=r"^image_url: download refused: a proxy is set"):
        run({"image_url": "http://10.1.1.1/a.png"}, settings, job_dir)
