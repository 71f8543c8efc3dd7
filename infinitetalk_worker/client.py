"""A portrait and a voice memo on a laptop in, a talking MP4 out: the worker's own client.

The worker we replace had no client beyond a script that uploaded to S3 by hand, and its first
issue was a user asking how to call the endpoint at all. This module is that answer, as a
command and as a function:

    python -m infinitetalk_worker.client --image face.jpg --audio memo.m4a -o talk.mp4

    from infinitetalk_worker.client import generate
    result = generate("talk.mp4", image="face.jpg", audio="memo.m4a", prompt="A calm anchor")

It sends each local file the way its size allows (inline base64 while the request stays under
RunPod's limit for /run, otherwise an upload to the network volume through its S3-compatible
API), validates the input against the worker's published schema before anything leaves the
machine, submits /run, shows the worker's progress updates while it polls /status, cancels the
job on Ctrl-C, and writes the MP4 wherever the result is (base64, volume path or bucket URL).

The same calls work against the local API of the worker (`python handler.py --rp_serve_api`,
the runpod SDK's development server): it offers /run and /status/{id} but no /cancel, and it runs
the job inside the first /status call, so no progress shows there until the job has ended.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, TextIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .settings import REPO_ROOT

RUNPOD_API = "https://api.runpod.ai/v2"
SCHEMA_FILE = REPO_ROOT / "schema" / "input.schema.json"
VOLUME_MOUNT = "/runpod-volume"
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus")

# The job's result keys, in the order the worker's contract (API.md section 2) lists them.
RESULT_KEYS = ("video", "video_path", "video_url")
FAILED_STATES = ("FAILED", "CANCELLED", "TIMED_OUT")

log = logging.getLogger("infinitetalk.client")


class ClientError(Exception):
    """A failure the user can act on; the message is the sentence they read."""


class JobFailed(ClientError):
    """The endpoint ended the job without a video (FAILED, CANCELLED, TIMED_OUT, expired)."""

    def __init__(self, job_id: str, status: str, message: str, results: list["Result"] | None = None):
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.results = results or []     # batch: the videos that were made all the same


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while waiting; the message says what became of the job on the endpoint."""


# --- Where the jobs go -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A RunPod endpoint, or anything that answers like one (the worker's local API)."""

    url: str                      # /run, /status/{id} and /cancel/{id} are appended to it
    api_key: str | None = None

    @classmethod
    def resolve(
        cls,
        endpoint_id: str | None = None,
        api_key: str | None = None,
        api_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Endpoint":
        env = os.environ if environ is None else environ
        api_key = api_key or env.get("RUNPOD_API_KEY") or None
        api_url = api_url or env.get("INFINITETALK_API_URL") or None
        if api_url:
            return cls(api_url.rstrip("/"), api_key)
        endpoint_id = endpoint_id or env.get("RUNPOD_ENDPOINT_ID")
        if not endpoint_id:
            raise ClientError(
                "endpoint: none given; pass --endpoint-id or set RUNPOD_ENDPOINT_ID "
                "(or --api-url http://127.0.0.1:8000 for the worker's local API)"
            )
        if not api_key:
            raise ClientError("api key: none given; pass --api-key or set RUNPOD_API_KEY")
        base = env.get("RUNPOD_ENDPOINT_BASE_URL", RUNPOD_API).rstrip("/")
        return cls(f"{base}/{endpoint_id}", api_key)


@dataclass
class Volume:
    """The network volume through RunPod's S3-compatible API (bucket = volume id).

    A file stored under `key` is `/runpod-volume/<key>` for the worker.
    """

    volume_id: str
    endpoint_url: str             # https://s3api-<datacenter>.runpod.io
    region: str                   # the datacenter id, e.g. EUR-IS-1
    access_key: str | None = None  # None: boto3's own chain (AWS_ACCESS_KEY_ID, ~/.aws)
    secret_key: str | None = None
    mount: str = VOLUME_MOUNT     # where the worker sees the volume (its VOLUME_DIR)
    _s3: Any = field(default=None, init=False, repr=False)
    _uploaded: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_env(
        cls,
        volume_id: str | None = None,
        datacenter: str | None = None,
        endpoint_url: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Volume | None":
        """The volume named by arguments or RUNPOD_VOLUME_ID & co; None when none is named."""
        env = os.environ if environ is None else environ
        volume_id = volume_id or env.get("RUNPOD_VOLUME_ID")
        if not volume_id:
            return None
        datacenter = datacenter or env.get("RUNPOD_DATACENTER")
        endpoint_url = endpoint_url or env.get("RUNPOD_S3_ENDPOINT_URL")
        if not endpoint_url:
            if not datacenter:
                raise ClientError(
                    "volume: RUNPOD_DATACENTER (e.g. EUR-IS-1) is needed to reach the S3 API "
                    "of the network volume; set it or pass --datacenter"
                )
            endpoint_url = f"https://s3api-{datacenter.lower()}.runpod.io"
        return cls(
            volume_id=volume_id,
            endpoint_url=endpoint_url,
            region=datacenter or "us-east-1",
            access_key=env.get("RUNPOD_S3_ACCESS_KEY") or None,
            secret_key=env.get("RUNPOD_S3_SECRET_KEY") or None,
            mount=env.get("RUNPOD_VOLUME_MOUNT") or VOLUME_MOUNT,
        )

    def key_for(self, worker_path: str) -> str:
        """The S3 key of a path the worker sees on the volume."""
        prefix = self.mount.rstrip("/") + "/"
        if not worker_path.startswith(prefix):
            raise ClientError(f"video_path: {worker_path} is not on the network volume ({prefix})")
        return worker_path[len(prefix):]

    def path_for(self, path: Path, digest: str) -> str:
        """Where the worker will find a local file once uploaded (named by its content)."""
        return f"{self.mount.rstrip('/')}/infinitetalk-inputs/{digest[:20]}/{path.name}"

    def upload(self, path: Path, digest: str) -> str:
        """Store a local file on the volume, once per run; returns its path for the worker."""
        worker_path = self.path_for(path, digest)
        if digest not in self._uploaded:
            key = self.key_for(worker_path)
            with path.open("rb") as body:
                self._call("upload", path.name, self._client().put_object,
                           Bucket=self.volume_id, Key=key, Body=body)
            self._uploaded[digest] = key
        return worker_path

    def download(self, worker_path: str, dest: Path) -> None:
        key = self.key_for(worker_path)
        answer = self._call("download", worker_path, self._client().get_object,
                            Bucket=self.volume_id, Key=key)
        with _atomic_file(dest) as out:
            for chunk in answer["Body"].iter_chunks(1 << 20):
                out.write(chunk)

    def remove_uploads(self) -> None:
        """Delete the inputs this run uploaded; the volume is billed by the gigabyte.

        Runs after failures too, so it only warns: the job's own error is what the user needs.
        """
        for key in self._uploaded.values():
            try:
                self._call("clean up", key, self._client().delete_object, Bucket=self.volume_id, Key=key)
            except ClientError as exc:
                log.warning("%s", exc)
        self._uploaded.clear()

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                # RunPod's S3 API wants path-style URLs and plain (not aws-chunked) bodies.
                config=Config(
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"max_attempts": 3},
                ),
            )
        return self._s3

    def _call(self, action: str, what: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError as S3Error

        try:
            return method(**kwargs)
        except S3Error as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise ClientError(
                f"volume: {action} of {what} failed at {self.endpoint_url} ({code}); check "
                "RUNPOD_VOLUME_ID, RUNPOD_DATACENTER and the S3 API keys (RUNPOD_S3_ACCESS_KEY, "
                "RUNPOD_S3_SECRET_KEY)"
            ) from None
        except BotoCoreError as exc:
            raise ClientError(f"volume: {action} of {what} failed: {exc}") from None


# --- The job input ---------------------------------------------------------------------------

# medium -> (field prefix, suffix) of the worker's input fields: image_path, wav_url_2, ...
_MEDIA_FIELDS = {
    "image": ("image", ""),
    "video": ("video", ""),
    "audio": ("wav", ""),
    "audio_2": ("wav", "_2"),
}


@dataclass
class _Medium:
    name: str                     # "image", "video", "audio", "audio_2"
    source: str
    local: Path | None            # a file on this machine, sent inline or uploaded
    size: int = 0

    def field(self, kind: str) -> str:
        prefix, suffix = _MEDIA_FIELDS[self.name]
        return f"{prefix}_{kind}{suffix}"

    @property
    def inline_size(self) -> int:
        return 4 * math.ceil(self.size / 3)


def _medium(name: str, source: str | os.PathLike, mount: str) -> _Medium:
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        return _Medium(name, text, None)
    path = Path(text).expanduser()
    if path.is_file():
        return _Medium(name, text, path, path.stat().st_size)
    if text.startswith(mount.rstrip("/") + "/"):
        return _Medium(name, text, None)      # already on the worker's network volume
    raise ClientError(
        f"{name}: {text} is neither a file here, an http(s) URL, nor a path on the worker's "
        f"network volume ({mount}/...)"
    )


def build_input(
    media: Mapping[str, str | os.PathLike | None],
    params: Mapping[str, Any],
    *,
    inline_limit_mb: float = 10.0,
    volume: Volume | None = None,
) -> dict[str, Any]:
    """The job input for the worker: media fields chosen by size, parameters, validated.

    Local files go inline as base64 while the whole /run request stays under inline_limit_mb;
    the largest ones go to the network volume otherwise, or the request is refused with what
    to configure. Nothing is uploaded for an input the schema rejects.
    """
    mount = volume.mount if volume else VOLUME_MOUNT
    chosen = [_medium(n, s, mount) for n, s in media.items() if s is not None]
    names = {m.name for m in chosen}
    if {"image", "video"} <= names:
        raise ClientError("image/video: give a portrait image or a source video, not both")
    job_input: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    if "video" in names:
        job_input.setdefault("input_type", "video")
    if "audio_2" in names:
        job_input.setdefault("person_count", "multi")

    for m in chosen:
        if m.local is None:
            kind = "url" if m.source.startswith(("http://", "https://")) else "path"
            job_input[m.field(kind)] = m.source
    inline = sorted((m for m in chosen if m.local), key=lambda m: m.inline_size)
    limit = int(inline_limit_mb * 1_000_000)
    # The request as sent: the JSON so far, plus per inline file its key, quotes, colon, comma.
    body = len(json.dumps({"input": job_input}).encode())
    body += sum(len(m.field("base64")) + 6 for m in inline)
    uploads: list[_Medium] = []
    while inline and body + sum(m.inline_size for m in inline) > limit:
        if volume is None:
            total = body + sum(m.inline_size for m in inline)
            files = ", ".join(f"{m.name} {_mb(m.size)}" for m in chosen if m.local)
            raise ClientError(
                f"request: {_mb(total)} with the files inline ({files}) is above the "
                f"{inline_limit_mb:g} MB limit of /run; set RUNPOD_VOLUME_ID, RUNPOD_DATACENTER, "
                "RUNPOD_S3_ACCESS_KEY and RUNPOD_S3_SECRET_KEY so the client uploads big files to "
                "the endpoint's network volume, pass http(s) URLs the worker can download, or "
                "raise --inline-limit-mb for the local API, which has no limit"
            )
        uploads.append(inline.pop())          # the largest first: fewest uploads

    for m in inline:
        job_input[m.field("base64")] = base64.b64encode(m.local.read_bytes()).decode("ascii")
    digests = {m.name: _sha256(m.local) for m in uploads}
    for m in uploads:
        job_input[m.field("path")] = volume.path_for(m.local, digests[m.name])
    validate_input(job_input)
    for m in uploads:
        volume.upload(m.local, digests[m.name])
    return job_input


def validate_input(job_input: Mapping[str, Any], schema_file: Path | None = None) -> None:
    """Check a job input against the worker's published JSON Schema; ClientError if it fails."""
    import jsonschema

    schema_file = schema_file or SCHEMA_FILE
    try:
        schema = json.loads(schema_file.read_text())
    except OSError:
        raise ClientError(f"schema: {schema_file} is missing; the client checks inputs against it") from None
    validator_cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(dict(job_input)))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "input"
        message = error.message
        if len(message) > 200:               # a base64 payload quoted back would drown the point
            message = message[:200] + "…"
        raise ClientError(f"{where}: {message}")


# --- Talking to the endpoint -----------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    """What the endpoint said about a job on one poll."""

    job_id: str
    status: str                   # IN_QUEUE, IN_PROGRESS
    progress: dict[str, Any]      # the worker's last progress update (empty until one came)
    waited_s: float               # since the job was submitted
    number: int = 1               # batch: this is job `number` of `of`
    of: int = 1


@dataclass(frozen=True)
class Result:
    path: Path                    # the MP4 on this machine
    job_id: str
    metadata: dict[str, Any]      # seed, frames, fps, duration_s, width, height, workflow, timings
    warnings: list[str]


class Api:
    """/run, /status and /cancel of one endpoint."""

    def __init__(self, endpoint: Endpoint, *, status_timeout_s: float = 7200.0):
        self.endpoint = endpoint
        # The local API answers /status only once the job has ended: allow a whole job.
        self.status_timeout_s = status_timeout_s
        headers = {"Content-Type": "application/json"}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self.session = requests.Session()        # /run: sent once, a repeat would queue it twice
        self.polling = requests.Session()        # /status, /cancel: safe to repeat
        # A long job outlives the odd 502 or dropped connection while it is polled.
        retry = Retry(total=5, backoff_factor=1, status_forcelist=(429, 500, 502, 503, 504),
                      allowed_methods=None, raise_on_status=False)
        self.polling.mount("http://", HTTPAdapter(max_retries=retry))
        self.polling.mount("https://", HTTPAdapter(max_retries=retry))
        for session in (self.session, self.polling):
            session.headers.update(headers)

    def submit(self, job_input: Mapping[str, Any]) -> tuple[str, str]:
        """Queue a job; its id and first status (IN_QUEUE on RunPod, IN_PROGRESS locally)."""
        answer = self._post("run", {"input": dict(job_input)}, timeout=120)
        job_id = answer.get("id")
        if not job_id:
            raise ClientError(f"endpoint: /run answered without a job id ({_short(answer)})")
        return str(job_id), str(answer.get("status") or "IN_QUEUE")

    def status(self, job_id: str) -> dict[str, Any]:
        # RunPod accepts POST for /status as well as GET; the local API only POST.
        response = self._request("POST", f"status/{job_id}", None, self.status_timeout_s)
        if response.status_code == 404:
            raise _expired(job_id)
        answer = self._json(response, "status")
        if answer.get("status") == "FAILED" and answer.get("error") == "Job ID not found":
            raise _expired(job_id)         # the local API's way to say it does not know the id
        return answer

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns the sentence saying what happened."""
        try:
            response = self._request("POST", f"cancel/{job_id}", None, 30)
        except ClientError as exc:
            return f"could not cancel job {job_id}: {exc}"
        if response.status_code in (404, 405):
            return (
                f"job {job_id} keeps running: this endpoint has no /cancel (the worker's local "
                "API); stop the worker process to stop it"
            )
        if not response.ok:
            return f"could not cancel job {job_id}: HTTP {response.status_code}"
        return f"cancelled job {job_id} on the endpoint"

    def _post(self, route: str, body: Any, timeout: float) -> dict[str, Any]:
        return self._json(self._request("POST", route, body, timeout), route)

    def _request(self, method: str, route: str, body: Any, timeout: float) -> requests.Response:
        url = f"{self.endpoint.url}/{route}"
        session = self.session if route == "run" else self.polling
        try:
            response = session.request(method, url, json=body, timeout=(15, timeout))
        except requests.ConnectionError:
            raise ClientError(
                f"endpoint: cannot reach {self.endpoint.url}; check the endpoint id, your network, "
                "or that the local API runs (python handler.py --rp_serve_api)"
            ) from None
        except requests.Timeout:
            raise ClientError(f"endpoint: {url} did not answer within {timeout:g} s") from None
        if response.status_code == 401:
            raise ClientError("endpoint: RunPod refused the API key (HTTP 401); check RUNPOD_API_KEY")
        if response.status_code == 413:
            raise ClientError(
                "request: the endpoint refused it as too large (HTTP 413); lower --inline-limit-mb "
                "so big files go to the network volume"
            )
        return response

    def _json(self, response: requests.Response, route: str) -> dict[str, Any]:
        if response.status_code == 404 and route == "run":
            raise ClientError(f"endpoint: no endpoint at {self.endpoint.url} (HTTP 404); check the endpoint id")
        if not response.ok:
            raise ClientError(f"endpoint: /{route} failed with HTTP {response.status_code}: {_short(response.text)}")
        try:
            answer = response.json()
        except ValueError:
            raise ClientError(f"endpoint: /{route} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise ClientError(f"endpoint: /{route} answered {_short(answer)}")
        return answer


def wait(
    api: Api,
    job_id: str,
    *,
    on_progress: Callable[[Update], None] | None = None,
    poll_interval_s: float = 2.0,
    submitted_at: float | None = None,
) -> dict[str, Any]:
    """Poll /status until the job ends; the COMPLETED output, or JobFailed saying why not."""
    started = time.monotonic() if submitted_at is None else submitted_at
    progress: dict[str, Any] = {}
    while True:
        answer = api.status(job_id)
        status = str(answer.get("status", ""))
        output = answer.get("output")
        if status == "COMPLETED":
            if isinstance(output, dict) and output.get("error"):
                raise JobFailed(job_id, status, f"job {job_id} failed: {output['error']}")
            if not isinstance(output, dict):
                raise JobFailed(job_id, status, f"job {job_id} completed without a result ({_short(output)})")
            return output
        if status in FAILED_STATES:
            raise JobFailed(job_id, status, _failure_sentence(job_id, status, answer))
        if status == "IN_PROGRESS" and isinstance(output, dict):
            progress = output
        elif status == "IN_PROGRESS" and isinstance(output, str):
            progress = {"message": output}
        if on_progress:
            on_progress(Update(job_id, status or "IN_QUEUE", progress, time.monotonic() - started))
        time.sleep(poll_interval_s)


def save_result(output: Mapping[str, Any], dest: Path, volume: Volume | None = None) -> Path:
    """Write the job's video, wherever the worker left it, to dest."""
    key = next((k for k in RESULT_KEYS if output.get(k)), None)
    if key == "video":
        with _atomic_file(dest) as out:
            out.write(base64.b64decode(output["video"], validate=True))
    elif key == "video_path":
        if volume is None:
            raise ClientError(
                f"video_path: the worker left the video on the network volume at "
                f"{output['video_path']}; set RUNPOD_VOLUME_ID, RUNPOD_DATACENTER and the S3 API "
                "keys so the client can fetch it"
            )
        volume.download(output["video_path"], dest)
    elif key == "video_url":
        try:
            with requests.get(output["video_url"], stream=True, timeout=(15, 300)) as response:
                response.raise_for_status()
                with _atomic_file(dest) as out:
                    for chunk in response.iter_content(1 << 20):
                        out.write(chunk)
        except requests.RequestException as exc:
            raise ClientError(f"video_url: download failed ({type(exc).__name__}); the link may have expired") from None
    else:
        raise ClientError(f"result: the job finished without a video ({_short(sorted(output))})")
    return dest


# --- The two calls users make ----------------------------------------------------------------


def generate(
    output: str | os.PathLike,
    *,
    image: str | os.PathLike | None = None,
    video: str | os.PathLike | None = None,
    audio: str | os.PathLike | None = None,
    audio_2: str | os.PathLike | None = None,
    endpoint: Endpoint | None = None,
    volume: Volume | None = None,
    inline_limit_mb: float = 10.0,
    on_progress: Callable[[Update], None] | None = None,
    poll_interval_s: float = 2.0,
    **params: Any,
) -> Result:
    """Make one talking video and write it to `output`.

    image / video / audio / audio_2: a local file, an http(s) URL, or a /runpod-volume/ path.
    params: the worker's generation fields (prompt, width, height, max_frame, seed, ...).
    endpoint: Endpoint.resolve() (RUNPOD_ENDPOINT_ID, RUNPOD_API_KEY) when not given.
    volume: Volume.from_env() (RUNPOD_VOLUME_ID & co) when not given.
    Ctrl-C cancels the job on the endpoint and raises Interrupted (a KeyboardInterrupt).
    """
    return generate_batch(
        [(Path(output), {"image": image, "video": video, "audio": audio, "audio_2": audio_2})],
        endpoint=endpoint, volume=volume, inline_limit_mb=inline_limit_mb,
        on_progress=on_progress, poll_interval_s=poll_interval_s, **params,
    )[0]


def _numbered(on_progress: Callable[[Update], None], number: int, of: int) -> Callable[[Update], None]:
    """on_progress for job `number` of `of` in a batch."""
    return lambda update: on_progress(replace(update, number=number, of=of))


def generate_batch(
    jobs: Iterable[tuple[Path, Mapping[str, str | os.PathLike | None]]],
    *,
    endpoint: Endpoint | None = None,
    volume: Volume | None = None,
    inline_limit_mb: float = 10.0,
    on_progress: Callable[[Update], None] | None = None,
    poll_interval_s: float = 2.0,
    **params: Any,
) -> list[Result]:
    """Submit every (output, media) job at once so the endpoint can run them side by side,
    then collect them in order. A job that fails does not stop the others; after all have
    ended, JobFailed names every failure."""
    api = Api(endpoint or Endpoint.resolve())
    volume = volume if volume is not None else Volume.from_env()
    jobs = [(Path(out), media) for out, media in jobs]
    submitted: list[tuple[Path, str, float]] = []
    ended: set[str] = set()
    results: list[Result] = []
    failures: list[tuple[str, ClientError]] = []
    try:
        for number, (out, media) in enumerate(jobs, 1):
            job_input = build_input(media, params, inline_limit_mb=inline_limit_mb, volume=volume)
            job_id, status = api.submit(job_input)
            submitted.append((out, job_id, time.monotonic()))
            if on_progress is not None:
                on_progress(Update(job_id, status, {}, 0.0, number, len(jobs)))
        for number, (out, job_id, at) in enumerate(submitted, 1):
            report = _numbered(on_progress, number, len(submitted)) if on_progress is not None else None
            try:
                answer = wait(api, job_id, on_progress=report,
                              poll_interval_s=poll_interval_s, submitted_at=at)
                ended.add(job_id)
                save_result(answer, out, volume)
            except ClientError as exc:
                ended.add(job_id)
                failures.append((job_id, exc))
                continue
            metadata = {k: v for k, v in answer.items() if k not in RESULT_KEYS and k != "warnings"}
            results.append(Result(out, job_id, metadata, list(answer.get("warnings") or [])))
    except KeyboardInterrupt:
        lines = [api.cancel(job_id) for _, job_id, _ in submitted if job_id not in ended]
        raise Interrupted("; ".join(lines) or "no job was running on the endpoint") from None
    finally:
        if volume is not None:
            volume.remove_uploads()
    if failures:
        job_id, first = failures[0]
        if len(jobs) == 1:
            raise first
        status = first.status if isinstance(first, JobFailed) else "COMPLETED"
        raise JobFailed(job_id, status, f"{len(failures)} of {len(jobs)} jobs failed: "
                        + "; ".join(str(exc) for _, exc in failures), results)
    return results


# --- The command -----------------------------------------------------------------------------


class ProgressBar:
    """Renders updates as one rewritten line on a terminal, one line per change in a log."""

    def __init__(self, stream: TextIO | None = None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_key: tuple | None = None
        self._shown = 0

    def __call__(self, update: Update) -> None:
        line = self.render(update)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._shown))
            self._shown = len(line)
        else:
            p = update.progress
            key = (update.number, update.status, p.get("stage"), p.get("window"), p.get("percent"), p.get("message"))
            if key == self._last_key:
                return
            self._last_key = key
            self.stream.write(line + "\n")
        self.stream.flush()

    def render(self, update: Update) -> str:
        p = update.progress
        label = f"[{update.number}/{update.of}] " if update.of > 1 else ""
        if update.status == "IN_QUEUE":
            return f"{label}job {update.job_id}: queued, waiting for a worker ({_clock(update.waited_s)})"
        if not p:
            return f"{label}job {update.job_id}: running, no progress reported yet ({_clock(update.waited_s)})"
        percent = max(0.0, min(100.0, float(p.get("percent") or 0)))
        filled = round(self.width * percent / 100)
        parts = [f"{label}[{'#' * filled}{'.' * (self.width - filled)}] {percent:3.0f}%"]
        if p.get("window") and p.get("windows"):
            parts.append(f"window {p['window']}/{p['windows']}")
        parts.append(f"{_clock(p.get('elapsed_s', update.waited_s))} elapsed")
        if p.get("eta_s") is not None:
            parts.append(f"{_clock(p['eta_s'])} left")
        if p.get("message"):
            parts.append(str(p["message"]))
        return " · ".join(parts)

    def done(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infinitetalk_worker.client",
        description="Make a lip-synced talking video with an InfiniteTalk endpoint.",
        epilog="Environment: RUNPOD_ENDPOINT_ID, RUNPOD_API_KEY, INFINITETALK_API_URL; for big "
        "files RUNPOD_VOLUME_ID, RUNPOD_DATACENTER, RUNPOD_S3_ACCESS_KEY, RUNPOD_S3_SECRET_KEY "
        "(and RUNPOD_S3_ENDPOINT_URL, RUNPOD_VOLUME_MOUNT where they differ from RunPod's).",
    )
    media = p.add_argument_group("media (a local file, an http(s) URL, or a /runpod-volume/ path)")
    media.add_argument("--image", help="portrait image (image-to-video)")
    media.add_argument("--video", help="source video to dub (video-to-video)")
    media.add_argument("--audio", help="speech of speaker 1")
    media.add_argument("--audio-2", help="speech of speaker 2 (two speakers)")
    media.add_argument("--audio-dir", type=Path, help="batch: one video per audio file in this folder")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", type=Path, default=Path("infinitetalk.mp4"), help="the MP4 to write")
    out.add_argument("--out-dir", type=Path, default=Path("."), help="batch: folder for <audio name>.mp4")
    gen = p.add_argument_group("generation (the worker's input fields)")
    gen.add_argument("--prompt")
    gen.add_argument("--negative-prompt")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--max-frame", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--cfg", type=float)
    gen.add_argument("--audio-scale", type=float)
    gen.add_argument("--multi-audio-type", choices=("para", "add"))
    gen.add_argument("--speaker-layout", choices=("left_right", "right_left"))
    gen.add_argument("--force-offload", action=argparse.BooleanOptionalAction, default=None)
    gen.add_argument("--network-volume", action="store_true", default=None,
                     help="ask the worker to leave the video on the network volume (fetched over S3)")
    gen.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="any other input field; VALUE is read as JSON when it parses")
    conn = p.add_argument_group("endpoint")
    conn.add_argument("--endpoint-id", help="RunPod endpoint id (default: $RUNPOD_ENDPOINT_ID)")
    conn.add_argument("--api-key", help="RunPod API key (default: $RUNPOD_API_KEY)")
    conn.add_argument("--api-url", help="URL replacing https://api.runpod.ai/v2/<endpoint id>, "
                      "e.g. http://127.0.0.1:8000 for the local API (default: $INFINITETALK_API_URL)")
    conn.add_argument("--volume-id", help="network volume id for big files (default: $RUNPOD_VOLUME_ID)")
    conn.add_argument("--datacenter", help="the volume's datacenter, e.g. EUR-IS-1 (default: $RUNPOD_DATACENTER)")
    conn.add_argument("--s3-endpoint-url", help="S3 API URL (default: https://s3api-<datacenter>.runpod.io)")
    conn.add_argument("--inline-limit-mb", type=float, default=10.0,
                      help="largest /run request with files inline; bigger files go to the volume (default 10)")
    conn.add_argument("--poll-interval", type=float, default=2.0, help="seconds between /status polls")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params = {
        name: getattr(args, name)
        for name in ("prompt", "negative_prompt", "width", "height", "max_frame", "seed", "steps",
                     "cfg", "audio_scale", "multi_audio_type", "speaker_layout", "force_offload",
                     "network_volume")
    }
    for item in args.param:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ClientError(f"--param: {item!r} is not NAME=VALUE")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    return params


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bar = None if args.quiet else ProgressBar()
    try:
        endpoint = Endpoint.resolve(args.endpoint_id, args.api_key, args.api_url)
        volume = Volume.from_env(args.volume_id, args.datacenter, args.s3_endpoint_url)
        params = _params(args)
        if args.audio_dir is not None:
            jobs = _batch_jobs(args)
        else:
            jobs = [(args.output, {"image": args.image, "video": args.video,
                                   "audio": args.audio, "audio_2": args.audio_2})]
        results = generate_batch(
            jobs, endpoint=endpoint, volume=volume, inline_limit_mb=args.inline_limit_mb,
            on_progress=bar, poll_interval_s=args.poll_interval, **params,
        )
    except Interrupted as exc:
        if bar:
            bar.done()
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:                 # a second Ctrl-C while the job was being cancelled
        return 130
    except ClientError as exc:
        if bar:
            bar.done()
        _print_results(exc.results if isinstance(exc, JobFailed) else [])
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if bar:
        bar.done()
    _print_results(results)
    return 0


def _print_results(results: list[Result]) -> None:
    for result in results:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        facts = ", ".join(f"{k} {result.metadata[k]}" for k in ("seed", "frames", "duration_s")
                          if k in result.metadata)
        print(f"{result.path}" + (f" ({facts})" if facts else ""))


def _batch_jobs(args: argparse.Namespace) -> list[tuple[Path, dict[str, Any]]]:
    if args.audio or args.audio_2:
        raise ClientError("--audio-dir: give it instead of --audio/--audio-2, not with them")
    if not args.audio_dir.is_dir():
        raise ClientError(f"--audio-dir: {args.audio_dir} is not a folder")
    audios = sorted(p for p in args.audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not audios:
        raise ClientError(f"--audio-dir: no audio files ({', '.join(AUDIO_SUFFIXES)}) in {args.audio_dir}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return [(args.out_dir / f"{a.stem}.mp4", {"image": args.image, "video": args.video, "audio": a})
            for a in audios]


# --- Small helpers ---------------------------------------------------------------------------


class _atomic_file:
    """Write to <dest>.part and rename on success, so a failed download leaves no half MP4."""

    def __init__(self, dest: Path):
        self.dest = Path(dest)
        self.part = self.dest.with_name(self.dest.name + ".part")

    def __enter__(self) -> BinaryIO:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.part.open("wb")
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        if exc_type is None:
            self.part.replace(self.dest)
        else:
            self.part.unlink(missing_ok=True)


def _failure_sentence(job_id: str, status: str, answer: Mapping[str, Any]) -> str:
    if status == "CANCELLED":
        return f"job {job_id} was cancelled on the endpoint (from the RunPod console or another client)"
    if status == "TIMED_OUT":
        return (
            f"job {job_id} ran past the endpoint's execution timeout; raise it in the endpoint's "
            "settings or ask for a shorter video"
        )
    error = answer.get("error")
    if isinstance(error, str):
        # A handler that raised instead of answering: runpod sends its error as a JSON record;
        # the user reads the message, never the traceback.
        try:
            record = json.loads(error)
        except ValueError:
            record = None
        if isinstance(record, dict) and "error_message" in record:
            error = record["error_message"]
    return f"job {job_id} failed: {error or 'the endpoint gave no reason'}"


def _expired(job_id: str) -> JobFailed:
    return JobFailed(
        job_id, "EXPIRED",
        f"job {job_id} is unknown to the endpoint: results of /run jobs expire 30 minutes after "
        "the job ends (or the id belongs to another endpoint); run it again",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _clock(seconds: Any) -> str:
    try:
        total = max(0, int(round(float(seconds))))
    except (TypeError, ValueError):
        return "?"
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


if __name__ == "__main__":
    sys.exit(main())
