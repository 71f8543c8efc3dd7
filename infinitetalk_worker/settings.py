"""Every setting of the worker, read from the environment in one place.

Each field names its environment variable and says what it does; the README's settings table
and the RunPod Hub form are checked against this list by the tests, so a setting added here
and documented nowhere fails CI.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
WORKFLOWS_DIR = REPO_ROOT / "workflows"

MiB = 1024 * 1024


def _setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    # --- ComfyUI ---------------------------------------------------------------------------
    comfy_url: str = _setting(
        "COMFY_URL", "http://127.0.0.1:8188", "Address of the local ComfyUI server."
    )
    comfy_dir: Path = _setting(
        "COMFY_DIR",
        Path("/comfyui"),
        "ComfyUI's folder; job media go to its input/ and results come from its output/ and temp/.",
    )
    comfy_ready_timeout_s: float = _setting(
        "COMFY_READY_TIMEOUT_S", 600.0, "How long a job waits for ComfyUI to answer at start."
    )
    comfy_ws_reconnects: int = _setting(
        "COMFY_WS_RECONNECTS", 5, "How often a dropped ComfyUI websocket is reconnected in one job."
    )
    comfy_dead_after_s: float = _setting(
        "COMFY_DEAD_AFTER_S",
        10.0,
        "How long ComfyUI may stay unreachable during a job (websocket gone, /system_stats not "
        "answering) before the job fails and RunPod is asked for a fresh worker.",
    )
    comfy_interrupt_wait_s: float = _setting(
        "COMFY_INTERRUPT_WAIT_S",
        30.0,
        "After a deadline or a cancel, how long to wait for ComfyUI to confirm the interrupt "
        "before the job fails anyway.",
    )
    job_timeout_s: float = _setting(
        "JOB_TIMEOUT_S",
        3600.0,
        "Deadline of one job inside ComfyUI; past it the run is interrupted and the job fails "
        "(long-form jobs deliver what they made).",
    )
    attention_mode: str = _setting(
        "ATTENTION_MODE",
        "sdpa",
        "Attention backend of the video model: sdpa runs on every NVIDIA GPU; sageattn is faster "
        "where SageAttention is installed.",
    )

    # --- Inputs ----------------------------------------------------------------------------
    volume_dir: Path = _setting(
        "VOLUME_DIR", Path("/runpod-volume"), "Mount point of the RunPod network volume."
    )
    extra_input_roots: tuple[Path, ...] = _setting(
        "INPUT_ROOTS",
        (),
        "Extra folders (os.pathsep-separated) that *_path inputs may read from, besides the "
        "network volume and the bundled examples.",
    )
    work_dir: Path = _setting(
        "WORK_DIR", Path("/tmp/infinitetalk-jobs"), "Where per-job folders are made and removed."
    )
    max_download_mb: int = _setting(
        "MAX_DOWNLOAD_MB", 500, "Largest file a *_url input may download, in MB."
    )
    download_timeout_s: float = _setting(
        "DOWNLOAD_TIMEOUT_S", 120.0, "Longest time one *_url download may take, in seconds."
    )
    max_base64_mb: int = _setting(
        "MAX_BASE64_MB", 50, "Largest decoded size of one *_base64 input, in MB."
    )
    max_audio_s: float = _setting(
        "MAX_AUDIO_S", 600.0, "Longest speech audio a job accepts, in seconds."
    )
    max_frames: int = _setting(
        "MAX_FRAMES", 15000, "Largest number of video frames one job may ask for."
    )

    # --- Results ---------------------------------------------------------------------------
    output_dir: Path = _setting(
        "OUTPUT_DIR",
        Path("/runpod-volume"),
        "Where network_volume results (and oversize results) are written.",
    )
    response_limit_mb: float = _setting(
        "RESPONSE_LIMIT_MB",
        10.0,
        "Largest base64 result returned inline, in MB; a bigger one goes to the volume or bucket.",
    )
    bucket_endpoint_url: str = _setting(
        "BUCKET_ENDPOINT_URL",
        "",
        "S3-compatible bucket for results (with BUCKET_ACCESS_KEY_ID and "
        "BUCKET_SECRET_ACCESS_KEY); results are returned as video_url.",
    )
    bucket_name: str = _setting(
        "BUCKET_NAME", "", "Bucket for results when BUCKET_ENDPOINT_URL is set."
    )

    # --- Long videos -----------------------------------------------------------------------
    longform_threshold_s: float = _setting(
        "LONGFORM_THRESHOLD_S",
        60.0,
        "Audio longer than this streams frames to disk window by window (flat memory).",
    )

    # --- LightX2V-compatible task service (python -m infinitetalk_worker.lightx2v) ----------
    lightx2v_host: str = _setting(
        "LIGHTX2V_HOST", "0.0.0.0", "Address the task service listens on (127.0.0.1: this machine only)."
    )
    lightx2v_port: int = _setting("LIGHTX2V_PORT", 8000, "Port of the task service.")
    lightx2v_cache_dir: Path = _setting(
        "LIGHTX2V_CACHE_DIR",
        Path("/workspace/lightx2v"),
        "Task service folder: tasks.sqlite3 (tasks survive restarts), inputs/ (uploads) and "
        "outputs/ (results; the only folder /v1/files/download serves).",
    )
    lightx2v_max_queue_size: int = _setting(
        "LIGHTX2V_MAX_QUEUE_SIZE",
        10,
        "Maximum number of tasks waiting or running at once; creating one more answers HTTP 503.",
    )
    lightx2v_max_upload_mb: int = _setting(
        "LIGHTX2V_MAX_UPLOAD_MB",
        500,
        "Largest create request (JSON with base64, or multipart uploads), in MB; bigger is HTTP 413.",
    )
    lightx2v_result_ttl_h: float = _setting(
        "LIGHTX2V_RESULT_TTL_H",
        72.0,
        "Hours a finished task and its result are kept before they are deleted (0: keep forever).",
    )

    # --- Deployment: models and start-up (entrypoint.sh, python -m infinitetalk_worker.provision)
    worker_mode: str = _setting(
        "WORKER_MODE",
        "serverless",
        "What the container serves: serverless (RunPod jobs), api (RunPod's local test API on "
        "port 8000) or lightx2v (the LightX2V-compatible task service).",
    )
    models_dir: str = _setting(
        "MODELS_DIR",
        "",
        "Folder with the model files. Empty: the models baked into the image if it has them, "
        "else <VOLUME_DIR>/models when a network volume is mounted, else <COMFY_DIR>/models.",
    )
    provision_models: bool = _setting(
        "PROVISION_MODELS",
        True,
        "Download missing model files (workflows/models.json) at start; off: only check them "
        "and fail the start when one is missing.",
    )
    download_workers: int = _setting(
        "DOWNLOAD_WORKERS", 4, "How many model files are downloaded at once."
    )
    comfy_extra_args: str = _setting(
        "COMFY_EXTRA_ARGS",
        "",
        "Extra command-line flags for ComfyUI, e.g. --reserve-vram 1.5 or --disable-smart-memory.",
    )

    # --- Logging ---------------------------------------------------------------------------
    log_level: str = _setting("LOG_LEVEL", "INFO", "Log level of the worker.")

    @property
    def input_roots(self) -> tuple[Path, ...]:
        """Folders that *_path inputs may read from."""
        return (self.volume_dir, EXAMPLES_DIR, *self.extra_input_roots)

    @property
    def comfy_input_dir(self) -> Path:
        return self.comfy_dir / "input"

    @property
    def comfy_output_dir(self) -> Path:
        return self.comfy_dir / "output"

    @property
    def comfy_temp_dir(self) -> Path:
        return self.comfy_dir / "temp"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _convert(f.metadata["env"], raw.strip(), f.default)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings (for child processes)."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = os.pathsep.join(str(p) for p in value)
            env[f.metadata["env"]] = str(value)
        return env

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) for every setting, in declaration order."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = os.pathsep.join(str(p) for p in default)
        rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
    return rows


def _convert(env: str, raw: str, default: Any) -> Any:
    from .errors import ConfigError

    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, tuple):
            return tuple(Path(p) for p in raw.split(os.pathsep) if p)
        return raw
    except ValueError:
        kind = type(default).__name__
        raise ConfigError(f"{env}: {raw!r} is not a valid {kind}") from None
