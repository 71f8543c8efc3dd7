"""Hand the finished MP4 to the caller: base64, a network-volume path, or a bucket URL.

API.md §2: exactly one result key, metadata beside it. Clients pick the first result key they
see, so a stray one loses the video. The worker we replace returned an empty output when the
video outgrew RunPod's response limit; here a result that is too big for an inline answer goes
to the volume or bucket (with a warning), and when neither exists the job fails with a
sentence that gives the size and says how to get the video. Nothing made is lost silently.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DeliveryError
from .settings import MiB, Settings

if TYPE_CHECKING:
    from .pipeline import Generated, JobContext
    from .request import Request

log = logging.getLogger("infinitetalk")

# Every key a client may read a result from (API.md §2). A result carries exactly one.
RESULT_KEYS = (
    "video", "video_path", "video_url", "video_base64", "url", "s3_path",
    "output_path", "image_path", "images", "videos", "message",
)

def base64_size(n_bytes: int) -> int:
    """Length of the standard base64 text of n bytes."""
    return 4 * ((n_bytes + 2) // 3)


def encode_base64(path: Path) -> str:
    """Standard base64 of a file: no data: prefix, no line breaks (what every client decodes).

    The file's bytes are dropped before the text is made, so at most two copies of the
    encoded size are held at once (bench/bench_delivery.py measures it).
    """
    data = path.read_bytes()
    encoded = base64.b64encode(data)
    del data
    return encoded.decode("ascii")


def bucket_credentials(settings: Settings, s3_config: dict | None) -> dict | None:
    """The bucket to upload to: RunPod's per-request s3Config first, then the environment."""
    if s3_config:
        missing = [k for k in ("accessId", "accessSecret", "endpointUrl") if not s3_config.get(k)]
        if missing:
            raise DeliveryError(
                f"s3Config: {', '.join(missing)} missing; give accessId, accessSecret, "
                "endpointUrl (and bucketName) or leave s3Config out"
            )
        return dict(s3_config)
    key_id = os.environ.get("BUCKET_ACCESS_KEY_ID", "")
    secret = os.environ.get("BUCKET_SECRET_ACCESS_KEY", "")
    if settings.bucket_endpoint_url and key_id and secret:
        return {
            "endpointUrl": settings.bucket_endpoint_url,
            "accessId": key_id,
            "accessSecret": secret,
            "bucketName": settings.bucket_name,
        }
    return None


def deliver(generated: "Generated", request: "Request", settings: Settings, ctx: "JobContext") -> dict:
    """Turn a finished video into the job's result (API.md §2)."""
    video = generated.video
    size = video.stat().st_size
    if size == 0:
        raise DeliveryError("the finished video is empty; the run produced no frames")
    warnings = list(generated.warnings)
    bucket = bucket_credentials(settings, ctx.s3_config)

    if request.network_volume:
        result: dict[str, Any] = {"video_path": str(save_to_volume(video, settings, ctx.job_id))}
    elif bucket is not None:
        result = {"video_url": upload_to_bucket(video, bucket, ctx.job_id)}
    elif base64_size(size) <= settings.response_limit_mb * MiB:
        result = {"video": encode_base64(video)}
    else:
        result = _deliver_oversize(video, size, settings, ctx.job_id, warnings)

    result.update(generated.metadata)
    if warnings:
        result["warnings"] = warnings
    assert sum(k in result for k in RESULT_KEYS) == 1, sorted(result)
    return result


def _deliver_oversize(video: Path, size: int, settings: Settings, job_id: str, warnings: list[str]) -> dict:
    encoded_mb = base64_size(size) / MiB
    limit = settings.response_limit_mb
    if volume_available(settings):
        path = save_to_volume(video, settings, job_id)
        warnings.append(
            f"the video is {encoded_mb:.1f} MB as base64, above the {limit:g} MB response "
            f"limit (RESPONSE_LIMIT_MB), so it was saved to the network volume at {path}"
        )
        return {"video_path": str(path)}
    raise DeliveryError(
        f"the video is {encoded_mb:.1f} MB as base64, above the {limit:g} MB response limit, and "
        "no network volume or bucket is attached; send network_volume: true with a volume "
        "attached, or configure a bucket (BUCKET_ENDPOINT_URL or the request's s3Config)"
    )


def volume_available(settings: Settings) -> bool:
    """A writable results folder on a mounted network volume."""
    base = settings.output_dir if settings.output_dir.is_dir() else settings.volume_dir
    return base.is_dir() and os.access(base, os.W_OK)


def save_to_volume(video: Path, settings: Settings, job_id: str) -> Path:
    """Copy the video to the results folder under a unique name, atomically, size verified."""
    out_dir = settings.output_dir
    if not volume_available(settings):
        raise DeliveryError(
            f"network_volume: no network volume is mounted at {settings.volume_dir}; attach one "
            "to the endpoint or leave network_volume out to get the video as base64"
        )
    final = out_dir / f"infinitetalk_{safe_name(job_id)}_{uuid.uuid4().hex[:8]}.mp4"
    partial = final.with_name(f".{final.name}.partial")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, partial)
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        if partial.stat().st_size != video.stat().st_size:
            partial.unlink(missing_ok=True)
            raise DeliveryError(f"network_volume: the copy to {out_dir} is incomplete (disk full?)")
        os.replace(partial, final)
    except OSError as e:
        partial.unlink(missing_ok=True)  # never leave half a video on the user's volume
        raise DeliveryError(
            f"network_volume: could not write the video to {out_dir} ({e.strerror or e}); "
            "check the volume's free space"
        ) from None
    log.info("job=%s delivered to volume %s (%d bytes)", job_id, final, final.stat().st_size)
    return final


def upload_to_bucket(video: Path, bucket: dict, job_id: str) -> str:
    """Upload to an S3-compatible bucket with RunPod's helper; returns a presigned https link."""
    from runpod.serverless.utils import rp_upload

    name = f"infinitetalk_{uuid.uuid4().hex[:8]}.mp4"
    try:
        url = rp_upload.upload_file_to_bucket(
            file_name=name,
            file_location=str(video),
            bucket_creds=bucket,
            bucket_name=bucket.get("bucketName") or None,
            prefix=safe_name(job_id),
            extra_args={"ContentType": "video/mp4"},
        )
    except Exception as e:  # boto raises many types; all mean the same thing to the user
        raise DeliveryError(
            f"uploading the video to the bucket at {bucket['endpointUrl']} failed "
            f"({type(e).__name__}); check the bucket name and keys"
        ) from None
    log.info("job=%s delivered to bucket %s", job_id, bucket["endpointUrl"])
    return url


def safe_name(text: str, limit: int = 64) -> str:
    """A job id made fit for file names and tags: ASCII letters, digits, '-' and '_' only."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in str(text))[:limit] or "job"
