"""`python -m infinitetalk_worker.provision` against a loopback stand-in of the Hugging Face Hub.

The stand-in serves the Hub's file endpoints the way huggingface_hub expects them
(HEAD/GET /{repo}/resolve/{revision}/{path} with X-Repo-Commit, ETag and Range support,
GET /api/models/{repo}/tree/{revision}, X-Error-Code on 404s), so the real huggingface_hub code
runs end to end through HF_ENDPOINT. Each test writes a small manifest of its own and reads the
stand-in's request log to tell what was downloaded.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from tests.conftest import REPO

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


class FakeHub:
    """Files by (repo, path); records every request; can cut the first GET of a file short."""

    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_first_get_after: dict[tuple[str, str], int] = {}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, self.headers.get("Range")))
                self._resolve(send_body=False)

            def do_GET(self):
                hub.requests.append(("GET", self.path, self.headers.get("Range")))
                path = urlparse(self.path).path
                if path.startswith("/api/models/"):
                    return self._tree(path)
                self._resolve(send_body=True)

            def _not_found(self, code: str):
                body = b'{"error": "not found"}'
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _tree(self, path: str):
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
                repo = m.group(1)
                entries = [
                    {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
                     "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
                    for (r, p), data in hub.files.items() if r == repo
                ]
                if not entries:
                    return self._not_found("RepoNotFound")
                body = json.dumps(entries).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _resolve(self, send_body: bool):
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urlparse(self.path).path)
                key = (m.group(1), unquote(m.group(3))) if m else None
                if key not in hub.files:
                    return self._not_found("EntryNotFound")
                data = hub.files[key]
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not send_body:
                    return
                cut = hub.cut_first_get_after.pop(key, None)
                if cut is not None:
                    self.wfile.write(data[start:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, path: str, data: bytes) -> None:
        self.files[(repo, path)] = data

    def gets(self) -> list[tuple[str, str | None]]:
        return [(p, r) for m, p, r in self.requests if m == "GET" and "/resolve/" in p]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()


def write_manifest(path: Path, entries: list[dict]) -> Path:
    full = [{"revision": COMMIT, "size": None, "sha256": None, "workflows": ["I2V_single"], **e} for e in entries]
    path.write_text(json.dumps({"models": full}))
    return path


def run_provision(hub: FakeHub, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "COMFY_DIR": str(tmp_path / "comfyui"),
        "VOLUME_DIR": str(tmp_path / "no-volume"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "infinitetalk_worker.provision", *args],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def two_files(hub, tmp_path):
    vae, lora = _payload(300_000, 1), _payload(200_000, 2)
    hub.add("Kijai/WanVideo_comfy", "Wan2_1_VAE_bf16.safetensors", vae)
    hub.add("Kijai/WanVideo_comfy", "Lightx2v/lightx2v_rank64.safetensors", lora)
    manifest = write_manifest(tmp_path / "models.json", [
        {"repo": "Kijai/WanVideo_comfy", "file": "Wan2_1_VAE_bf16.safetensors", "folder": "vae",
         "size": len(vae), "sha256": hashlib.sha256(vae).hexdigest()},
        {"repo": "Kijai/WanVideo_comfy", "file": "Lightx2v/lightx2v_rank64.safetensors", "folder": "loras"},
    ])
    return manifest, vae, lora


def test_fresh_download_puts_every_file_in_its_folder(hub, tmp_path, two_files):
    manifest, vae, lora = two_files
    models = tmp_path / "models"
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    assert (models / "vae" / "Wan2_1_VAE_bf16.safetensors").read_bytes() == vae
    # The file lands under its basename: that is the value the graph's loader names.
    assert (models / "loras" / "lightx2v_rank64.safetensors").read_bytes() == lora
    assert not list(models.rglob("*.part"))
    assert len(hub.gets()) == 2
    assert "all model files in place" in result.stdout


def test_second_run_downloads_nothing_and_asks_the_hub_nothing(hub, tmp_path, two_files):
    manifest, _, _ = two_files
    models = tmp_path / "models"
    assert run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models)).returncode == 0
    before = len(hub.requests)
    again = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert again.returncode == 0, again.stderr
    assert hub.requests[before:] == []
    assert "2 of 2 model files in place" in again.stdout


def test_a_transfer_cut_mid_file_resumes_with_a_range_request(hub, tmp_path):
    # huggingface_hub writes in chunks of DOWNLOAD_CHUNK_SIZE: cut the connection after the
    # first whole chunk, and the retry must ask for the rest only.
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    data = _payload(DOWNLOAD_CHUNK_SIZE + 2_000_000, 5)
    hub.add("Kijai/WanVideo_comfy", "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors", data)
    hub.cut_first_get_after[("Kijai/WanVideo_comfy", "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors")] = (
        DOWNLOAD_CHUNK_SIZE + 1_000_000)
    manifest = write_manifest(tmp_path / "models.json", [
        {"repo": "Kijai/WanVideo_comfy", "file": "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors",
         "folder": "diffusion_models", "size": len(data)},
    ])
    models = tmp_path / "models"
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    assert (models / "diffusion_models" / "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors").read_bytes() == data
    assert [rng for _, rng in hub.gets()] == [None, f"bytes={DOWNLOAD_CHUNK_SIZE}-"]


def test_a_run_killed_mid_file_is_resumed_by_the_next_run(hub, tmp_path, two_files):
    manifest, vae, _ = two_files
    models = tmp_path / "models"
    # What a killed run leaves behind: the first part of the file.
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "Wan2_1_VAE_bf16.safetensors.part").write_bytes(vae[:100_000])
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    assert (models / "vae" / "Wan2_1_VAE_bf16.safetensors").read_bytes() == vae
    assert [rng for path, rng in hub.gets() if "VAE" in path] == ["bytes=100000-"]
    assert "resuming at 100.0 KB" in result.stdout


def test_checksum_mismatch_is_an_error_naming_the_file_and_leaves_nothing(hub, tmp_path):
    data = _payload(50_000, 3)
    hub.add("Kijai/WanVideo_comfy", "umt5-xxl-enc-fp8_e4m3fn.safetensors", data)
    manifest = write_manifest(tmp_path / "models.json", [
        {"repo": "Kijai/WanVideo_comfy", "file": "umt5-xxl-enc-fp8_e4m3fn.safetensors",
         "folder": "text_encoders", "sha256": "ab" * 32},
    ])
    models = tmp_path / "models"
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert result.returncode == 1
    assert "Kijai/WanVideo_comfy/umt5-xxl-enc-fp8_e4m3fn.safetensors: checksum mismatch" in result.stderr
    assert not list((models / "text_encoders").iterdir())


def test_a_corrupted_file_on_disk_is_downloaded_again(hub, tmp_path, two_files):
    manifest, vae, _ = two_files
    models = tmp_path / "models"
    assert run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models)).returncode == 0
    target = models / "vae" / "Wan2_1_VAE_bf16.safetensors"
    target.write_bytes(b"\0" * len(vae))  # same size, wrong content
    before = len(hub.gets())
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == vae
    assert len(hub.gets()) == before + 1


def test_a_file_the_hub_does_not_have_is_reported_by_name(hub, tmp_path, two_files):
    manifest, _, _ = two_files
    entries = json.loads(manifest.read_text())["models"]
    entries.append({**entries[0], "file": "MelBandRoformer_fp16.safetensors", "folder": "diffusion_models",
                    "size": None, "sha256": None})
    manifest.write_text(json.dumps({"models": entries}))
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(tmp_path / "m"))
    assert result.returncode == 1
    assert ("Kijai/WanVideo_comfy/MelBandRoformer_fp16.safetensors: not found in Kijai/WanVideo_comfy "
            "at revision 0123456789ab") in result.stderr
    # The other files still arrived: one bad entry does not waste the rest of the download.
    assert (tmp_path / "m" / "vae" / "Wan2_1_VAE_bf16.safetensors").is_file()


def test_check_only_lists_missing_files_and_downloads_nothing(hub, tmp_path, two_files):
    manifest, _, _ = two_files
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(tmp_path / "m"),
                           PROVISION_MODELS="false")
    assert result.returncode == 1
    assert "2 model files missing under" in result.stderr
    assert "vae/Wan2_1_VAE_bf16.safetensors" in result.stderr
    assert "set PROVISION_MODELS=true" in result.stderr
    assert hub.gets() == []


def test_whole_repo_entry_downloads_every_file_with_its_hub_checksum(hub, tmp_path):
    files = {"config.json": b'{"hidden_size": 768}', "weights/pytorch_model.bin": _payload(80_000, 4)}
    for path, data in files.items():
        hub.add("TencentGameMate/chinese-wav2vec2-base", path, data)
    manifest = write_manifest(tmp_path / "models.json", [
        {"repo": "TencentGameMate/chinese-wav2vec2-base", "file": None,
         "folder": "transformers/TencentGameMate/chinese-wav2vec2-base"},
    ])
    models = tmp_path / "models"
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models))
    assert result.returncode == 0, result.stderr
    base = models / "transformers" / "TencentGameMate" / "chinese-wav2vec2-base"
    for path, data in files.items():
        assert (base / path).read_bytes() == data
    before = len(hub.requests)
    assert run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(models)).returncode == 0
    assert hub.requests[before:] == []


def test_with_a_network_volume_comfyui_is_pointed_at_it(hub, tmp_path, two_files):
    manifest, vae, _ = two_files
    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    comfy = tmp_path / "comfyui"
    (comfy / "models" / "transformers").mkdir(parents=True)
    entries = json.loads(manifest.read_text())["models"]
    hub.add("TencentGameMate/chinese-wav2vec2-base", "config.json", b"{}")
    entries.append({**entries[1], "repo": "TencentGameMate/chinese-wav2vec2-base", "file": "config.json",
                    "folder": "transformers/TencentGameMate/chinese-wav2vec2-base"})
    manifest.write_text(json.dumps({"models": entries}))
    result = run_provision(hub, tmp_path, "--manifest", str(manifest),
                           VOLUME_DIR=str(volume), COMFY_DIR=str(comfy))
    assert result.returncode == 0, result.stderr
    assert (volume / "models" / "vae" / "Wan2_1_VAE_bf16.safetensors").read_bytes() == vae
    config = (comfy / "extra_model_paths.yaml").read_text()
    assert f"base_path: {volume / 'models'}" in config
    for folder in ("vae", "loras", "transformers"):
        assert f"  {folder}: {folder}\n" in config
    # The wav2vec loader reads <ComfyUI>/models/transformers itself: it must see the volume's files.
    assert (comfy / "models" / "transformers" / "TencentGameMate" / "chinese-wav2vec2-base" / "config.json").is_file()


def test_models_baked_into_the_image_win_over_the_volume(hub, tmp_path, two_files):
    manifest, vae, lora = two_files
    comfy = tmp_path / "comfyui"
    baked = comfy / "models"
    (baked / "vae").mkdir(parents=True)
    (baked / "loras").mkdir()
    (baked / "vae" / "Wan2_1_VAE_bf16.safetensors").write_bytes(vae)
    (baked / "loras" / "lightx2v_rank64.safetensors").write_bytes(lora)
    (comfy / "extra_model_paths.yaml").write_text("stale: {}\n")
    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    result = run_provision(hub, tmp_path, "--manifest", str(manifest),
                           VOLUME_DIR=str(volume), COMFY_DIR=str(comfy))
    assert result.returncode == 0, result.stderr
    assert hub.gets() == []
    assert not (volume / "models").exists()
    assert not (comfy / "extra_model_paths.yaml").exists()


def test_too_little_disk_is_reported_before_anything_is_downloaded(hub, tmp_path):
    hub.add("Kijai/WanVideo_comfy", "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors", b"weights")
    manifest = write_manifest(tmp_path / "models.json", [
        {"repo": "Kijai/WanVideo_comfy", "file": "Wan2_1-I2V-14B-480P_fp8_e4m3fn.safetensors",
         "folder": "diffusion_models", "size": 10**15},
    ])
    result = run_provision(hub, tmp_path, "--manifest", str(manifest), "--models-dir", str(tmp_path / "m"))
    assert result.returncode == 1
    assert "not enough disk space" in result.stderr and "need 1000000.0 GB" in result.stderr
    assert hub.requests == []
