"""Delivery of a finished video: base64, network volume, bucket, and results too big to inline."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from infinitetalk_worker import delivery
from infinitetalk_worker.errors import DeliveryError
from infinitetalk_worker.pipeline import Generated, JobContext
from infinitetalk_worker.settings import Settings


@dataclass
class _Req:
    network_volume: bool = False


def _mp4(path: Path, seconds: float = 1.0, size: str = "64x64") -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds),
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    settings = Settings(volume_dir=volume, output_dir=volume / "results", work_dir=tmp_path / "work")
    video = _mp4(tmp_path / "result.mp4")
    generated = Generated(video=video, metadata={"seed": 7, "frames": 25}, warnings=[])
    return settings, generated, volume


def _result_keys(result: dict) -> list[str]:
    return [k for k in delivery.RESULT_KEYS if k in result]


def test_default_is_plain_base64_of_the_mp4(env):
    settings, generated, _ = env
    result = delivery.deliver(generated, _Req(), settings, JobContext("job-1"))
    assert _result_keys(result) == ["video"]
    text = result["video"]
    assert "\n" not in text and not text.startswith("data:")
    assert base64.b64decode(text, validate=True) == generated.video.read_bytes()
    assert result["seed"] == 7 and result["frames"] == 25


def test_network_volume_returns_a_complete_unique_file(env):
    settings, generated, volume = env
    first = delivery.deliver(generated, _Req(network_volume=True), settings, JobContext("job-1"))
    second = delivery.deliver(generated, _Req(network_volume=True), settings, JobContext("job-1"))
    assert _result_keys(first) == ["video_path"]
    assert first["video_path"] != second["video_path"]
    path = Path(first["video_path"])
    assert path.parent == volume / "results"
    assert path.read_bytes() == generated.video.read_bytes()
    assert not list(path.parent.glob(".*partial")), "no half-written file may stay behind"


def test_network_volume_without_a_volume_says_so(env, tmp_path):
    settings, generated, _ = env
    settings = settings.replace(volume_dir=tmp_path / "absent", output_dir=tmp_path / "absent" / "out")
    with pytest.raises(DeliveryError, match="network_volume: no network volume is mounted"):
        delivery.deliver(generated, _Req(network_volume=True), settings, JobContext("job-1"))


def test_oversize_result_goes_to_the_volume_with_a_warning(env):
    settings, generated, _ = env
    size = generated.video.stat().st_size
    settings = settings.replace(response_limit_mb=size / 2 / 1024 / 1024)
    result = delivery.deliver(generated, _Req(), settings, JobContext("job-big"))
    assert _result_keys(result) == ["video_path"]
    assert Path(result["video_path"]).read_bytes() == generated.video.read_bytes()
    assert any("response limit" in w and result["video_path"] in w for w in result["warnings"])


def test_oversize_result_without_storage_fails_with_size_and_remedy(env, tmp_path):
    settings, generated, _ = env
    settings = settings.replace(
        response_limit_mb=0.001, volume_dir=tmp_path / "absent", output_dir=tmp_path / "absent" / "out"
    )
    with pytest.raises(DeliveryError) as err:
        delivery.deliver(generated, _Req(), settings, JobContext("job-big"))
    message = str(err.value)
    assert "MB as base64" in message and "network_volume: true" in message and "bucket" in message


@pytest.fixture
def s3_server():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    yield url, s3
    server.stop()


def test_request_s3config_uploads_and_returns_a_working_link(env, s3_server):
    settings, generated, _ = env
    url, s3 = s3_server
    s3_config = {"accessId": "test", "accessSecret": "test", "bucketName": "results", "endpointUrl": url}
    result = delivery.deliver(generated, _Req(), settings, JobContext("job-s3", s3_config=s3_config))
    assert _result_keys(result) == ["video_url"]
    download = requests.get(result["video_url"], timeout=10)
    assert download.status_code == 200
    assert download.content == generated.video.read_bytes()
    [obj] = s3.list_objects_v2(Bucket="results")["Contents"]
    assert obj["Key"].startswith("job-s3/") and obj["Key"].endswith(".mp4")
    assert s3.head_object(Bucket="results", Key=obj["Key"])["ContentType"] == "video/mp4"


def test_bucket_from_environment(env, s3_server, monkeypatch):
    settings, generated, _ = env
    url, _ = s3_server
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "test")
    settings = settings.replace(bucket_endpoint_url=url, bucket_name="results")
    result = delivery.deliver(generated, _Req(), settings, JobContext("job-env"))
    assert _result_keys(result) == ["video_url"]
    assert requests.get(result["video_url"], timeout=10).content == generated.video.read_bytes()


def test_broken_bucket_is_a_clear_error_without_secrets(env, s3_server):
    settings, generated, _ = env
    url, _ = s3_server
    s3_config = {"accessId": "test", "accessSecret": "supersecret", "bucketName": "no-such-bucket", "endpointUrl": url}
    with pytest.raises(DeliveryError) as err:
        delivery.deliver(generated, _Req(), settings, JobContext("job-s3", s3_config=s3_config))
    assert "bucket" in str(err.value) and "supersecret" not in str(err.value)
