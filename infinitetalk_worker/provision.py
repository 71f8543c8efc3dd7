"""Puts every model file the workflows need where ComfyUI reads them: `python -m infinitetalk_worker.provision`.

The worker we replace never provisioned the wav2vec model (every fresh worker downloaded it during
its first job) and asked users to fill a 280 GB disk by hand. Here one manifest
(workflows/models.json) drives the image build (models baked in), the first start on a network
volume and the workflow validator alike.

A run:
  1. picks the models folder (MODELS_DIR, else baked-in models, else the network volume, else
     ComfyUI's own models/ folder);
  2. skips every file already present and verified (size, and sha256 where known; a verified
     file is remembered in .provision-verified.json so the next start does not hash 30 GB again);
  3. downloads the rest through huggingface_hub, several at once, into `<file>.part` files that
     a later run resumes with an HTTP range request (files the Hub stores in Xet go through
     hf_xet instead, the fast path, when it is installed: those restart if interrupted);
  4. checks that every file is there, and tells ComfyUI where they are (extra_model_paths.yaml).
Running it twice downloads nothing the second time and makes no request at all.

Exit status: 0 when every file is in place, 1 with one line per missing or broken file otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import WorkerError
from .models import ModelFile, load_manifest, missing
from .settings import Settings

log = logging.getLogger("infinitetalk")

VERIFIED_FILE = ".provision-verified.json"
PART_SUFFIX = ".part"
HASH_CHUNK = 8 * 1024 * 1024
PROGRESS_INTERVAL_S = 15.0


class ProvisionError(WorkerError):
    """A model file could not be put in place; the sentence names it."""


@dataclass(frozen=True)
class Wanted:
    """One file to have on disk: where it comes from, where it goes, what it must be."""

    repo: str
    revision: str
    path_in_repo: str
    target: Path
    size: int | None
    sha256: str | None

    @property
    def name(self) -> str:
        return f"{self.repo}/{self.path_in_repo}"


class VerifiedLedger:
    """Files whose size and checksum were checked, and repo listings already fetched.

    Keyed by path relative to the models folder and valid only while size and mtime match, so
    a file replaced or truncated behind our back is checked again.
    """

    def __init__(self, models_dir: Path):
        self.path = models_dir / VERIFIED_FILE
        self._lock = threading.Lock()
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        self.files: dict[str, dict] = data.get("files", {})
        self.listings: dict[str, list[dict]] = data.get("listings", {})
        self.models_dir = models_dir

    def _key(self, target: Path) -> str:
        return target.relative_to(self.models_dir).as_posix()

    def is_verified(self, target: Path, sha256: str | None) -> bool:
        entry = self.files.get(self._key(target))
        if entry is None or (sha256 and entry.get("sha256") != sha256):
            return False
        st = target.stat()
        return entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns

    def remember(self, target: Path, sha256: str | None) -> None:
        st = target.stat()
        with self._lock:
            self.files[self._key(target)] = {
                "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256,
            }

    def save(self) -> None:
        with self._lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"files": self.files, "listings": self.listings}, indent=1))
            os.replace(tmp, self.path)


# --- choosing the models folder -----------------------------------------------------------------

def resolve_models_dir(settings: Settings, models: list[ModelFile]) -> Path:
    """MODELS_DIR, else models baked into the image, else the network volume, else ComfyUI's."""
    if settings.models_dir:
        return Path(settings.models_dir)
    image_models = settings.comfy_dir / "models"
    if not missing(image_models, models):
        return image_models
    if settings.volume_dir.is_dir():
        return settings.volume_dir / "models"
    return image_models


# --- what to fetch --------------------------------------------------------------------------------

def wanted_files(models: list[ModelFile], models_dir: Path, ledger: VerifiedLedger) -> list[Wanted]:
    """Every file of the manifest as a concrete download; whole-repo entries are listed once."""
    wanted: list[Wanted] = []
    for m in models:
        revision = m.revision or "main"
        if m.revision is None:
            log.warning("provision: %s/%s has no pinned revision in the manifest; using main",
                        m.repo, m.file or "")
        if m.file is not None:
            wanted.append(Wanted(
                repo=m.repo, revision=revision, path_in_repo=m.file,
                target=m.path_under(models_dir), size=m.size, sha256=m.sha256,
            ))
            continue
        for entry in _repo_listing(m, revision, ledger):
            wanted.append(Wanted(
                repo=m.repo, revision=revision, path_in_repo=entry["path"],
                target=models_dir / m.folder / entry["path"],
                size=entry["size"], sha256=entry["sha256"],
            ))
    return wanted


def _repo_listing(m: ModelFile, revision: str, ledger: VerifiedLedger) -> list[dict]:
    key = f"{m.repo}@{revision}"
    # A branch can move: only a pinned commit's listing is remembered.
    if key in ledger.listings and m.revision:
        return ledger.listings[key]
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        tree = [f for f in HfApi().list_repo_tree(m.repo, revision=revision, recursive=True)
                if isinstance(f, RepoFile)]
    except Exception as exc:  # network, 404, gated: all end the same way for the user
        raise ProvisionError(f"{m.repo}: could not list the repository at {revision[:12]}: {_short(exc)}") from exc
    listing = [
        {"path": f.path, "size": f.size, "sha256": f.lfs.sha256 if f.lfs is not None else None}
        for f in tree if not PurePosixPath(f.path).name.startswith(".")
    ]
    ledger.listings[key] = listing
    return listing


# --- one file -------------------------------------------------------------------------------

def is_in_place(w: Wanted, ledger: VerifiedLedger) -> bool:
    """Present with the right size, and the right checksum where one is known (hashed once)."""
    if not w.target.is_file():
        return False
    if w.size is not None and w.target.stat().st_size != w.size:
        return False
    if ledger.is_verified(w.target, w.sha256):
        return True
    if w.sha256 and sha256_of(w.target) != w.sha256:
        return False
    ledger.remember(w.target, w.sha256)
    return True


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(w: Wanted, ledger: VerifiedLedger) -> int:
    """Fetch one file into place; returns the bytes transferred. Raises ProvisionError naming it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(w.repo, w.path_in_repo, revision=w.revision)
    try:
        meta = get_hf_file_metadata(url)
    except Exception as exc:
        raise ProvisionError(f"{w.name}: {_describe_http_failure(exc, w)}") from exc
    size = w.size if w.size is not None else meta.size
    if w.size is not None and meta.size is not None and meta.size != w.size:
        raise ProvisionError(
            f"{w.name}: the Hub has {meta.size} bytes at {w.revision[:12]}, the manifest expects "
            f"{w.size}; fix the manifest's size or revision"
        )
    # LFS files carry their sha256 as ETag: a free integrity check where the manifest has none.
    expected_sha = w.sha256 or (meta.etag if meta.etag and len(meta.etag) == 64 else None)

    w.target.parent.mkdir(parents=True, exist_ok=True)
    part = w.target.with_name(w.target.name + PART_SUFFIX)
    started = time.monotonic()
    try:
        if meta.xet_file_data is not None and _xet_usable():
            transferred = _download_xet(w, part)
        else:
            transferred = _download_http(w, part, meta.location, size, build_hf_headers())
    except ProvisionError:
        raise
    except Exception as exc:
        raise ProvisionError(
            f"{w.name}: download failed ({_short(exc)}); run provisioning again to resume it"
        ) from exc

    if expected_sha and sha256_of(part) != expected_sha:
        part.unlink(missing_ok=True)
        raise ProvisionError(
            f"{w.name}: checksum mismatch (sha256 expected {expected_sha[:16]}…); the download was "
            "removed, run provisioning again"
        )
    os.replace(part, w.target)
    ledger.remember(w.target, expected_sha)
    seconds = time.monotonic() - started
    log.info("provision: %s -> %s (%s in %.1f s)", w.name, w.target, _human(transferred), seconds)
    return transferred


def _download_http(w: Wanted, part: Path, location: str, size: int | None, headers: dict) -> int:
    from huggingface_hub.file_download import http_get

    with part.open("ab") as f:
        resume = f.tell()
        if size is not None and resume > size:  # a stale part of another version
            f.truncate(0)
            resume = 0
        if resume:
            log.info("provision: %s: resuming at %s of %s", w.name, _human(resume), _human(size or 0))
        http_get(location, f, resume_size=resume, headers=headers, expected_size=size,
                 displayed_filename=PurePosixPath(w.path_in_repo).name)
    return part.stat().st_size - resume


def _download_xet(w: Wanted, part: Path) -> int:
    from huggingface_hub import hf_hub_download

    # The fast path, but an interrupted Xet transfer starts that file again: drop what a killed
    # run left. The staging folder sits beside the target so the final move is a rename.
    staging = part.parent / ".provision-staging"
    for leftover in staging.rglob("*.incomplete"):
        leftover.unlink(missing_ok=True)
    fetched = Path(hf_hub_download(w.repo, w.path_in_repo, revision=w.revision, local_dir=staging))
    size = fetched.stat().st_size
    os.replace(fetched, part)
    return size


def _xet_usable() -> bool:
    from huggingface_hub import constants
    from huggingface_hub.utils import is_xet_available

    return is_xet_available() and not constants.HF_HUB_DISABLE_XET


def _describe_http_failure(exc: Exception, w: Wanted) -> str:
    from huggingface_hub.errors import (
        GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    if isinstance(exc, RemoteEntryNotFoundError):
        return f"not found in {w.repo} at revision {w.revision[:12]}; fix the manifest entry"
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {w.revision[:12]} does not exist in {w.repo}; fix the manifest entry"
    if isinstance(exc, GatedRepoError):
        return f"{w.repo} is gated: accept its licence on the Hub and set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return f"repository {w.repo} not found (or private: set HF_TOKEN)"
    return f"the Hub did not answer ({_short(exc)}); check the network and run provisioning again"


# --- the whole run ------------------------------------------------------------------------------

def provision(models: list[ModelFile], models_dir: Path, *, download_missing: bool, workers: int) -> None:
    """Make every file of `models` present under `models_dir`; ProvisionError lists what is not."""
    models_dir.mkdir(parents=True, exist_ok=True)
    ledger = VerifiedLedger(models_dir)
    try:
        wanted = wanted_files(models, models_dir, ledger)
        missing = [w for w in wanted if not is_in_place(w, ledger)]
        unknown = sum(1 for w in missing if w.size is None)
        size_note = _human(sum(w.size or 0 for w in missing)) + (f" + {unknown} of unknown size" if unknown else "")
        log.info("provision: %d of %d model files in place under %s; %d to fetch (%s)",
                 len(wanted) - len(missing), len(wanted), models_dir, len(missing), size_note)
        if missing and not download_missing:
            raise ProvisionError(_missing_sentence(missing, models_dir)
                                 + "; set PROVISION_MODELS=true to download them")
        if missing:
            _check_disk_space(missing, models_dir)
        errors: list[str] = []
        if missing:
            started = time.monotonic()
            done = threading.Event()
            reporter = threading.Thread(target=_report_progress, args=(missing, done), daemon=True)
            reporter.start()
            with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="download") as pool:
                futures = [pool.submit(download, w, ledger) for w in missing]
                transferred = 0
                for future in futures:
                    try:
                        transferred += future.result()
                    except ProvisionError as exc:
                        errors.append(exc.message)
            done.set()
            log.info("provision: fetched %s in %.0f s", _human(transferred), time.monotonic() - started)
        still_missing = [w for w in wanted if not w.target.is_file()]
        if errors or still_missing:
            lines = errors or [_missing_sentence(still_missing, models_dir)]
            raise ProvisionError("\n".join(lines))
    finally:
        ledger.save()


def _check_disk_space(missing: list[Wanted], models_dir: Path) -> None:
    need = 0
    for w in missing:
        part = w.target.with_name(w.target.name + PART_SUFFIX)
        need += max(0, (w.size or 0) - (part.stat().st_size if part.is_file() else 0))
    free = shutil.disk_usage(models_dir).free
    if need > free:
        raise ProvisionError(
            f"not enough disk space under {models_dir}: the missing model files need {_human(need)}, "
            f"{_human(free)} is free; give the network volume (or the container disk) more space"
        )


def _report_progress(missing: list[Wanted], done: threading.Event) -> None:
    """One log line every PROGRESS_INTERVAL_S: bytes on disk so far, of the known total, and the rate."""
    def on_disk() -> int:
        have = 0
        for w in missing:
            for path in (w.target, w.target.with_name(w.target.name + PART_SUFFIX)):
                if path.is_file():
                    have += path.stat().st_size
                    break
        return have

    total = sum(w.size or 0 for w in missing)
    started, last = time.monotonic(), on_disk()
    while not done.wait(PROGRESS_INTERVAL_S):
        have = on_disk()
        rate = max(0, have - last) / PROGRESS_INTERVAL_S
        share = f" of {_human(total)} ({100 * have / total:.0f}%)" if total else ""
        log.info("provision: %s%s on disk, %s/s, %.0f s so far", _human(have), share, _human(int(rate)),
                 time.monotonic() - started)
        last = have


def _missing_sentence(missing: list[Wanted], models_dir: Path) -> str:
    names = ", ".join(str(w.target.relative_to(models_dir)) for w in missing[:8])
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    return f"{len(missing)} model files missing under {models_dir}: {names}{more}"


def configure_comfyui(models: list[ModelFile], models_dir: Path, comfy_dir: Path) -> None:
    """Point ComfyUI at `models_dir` when it is not ComfyUI's own models/ folder.

    extra_model_paths.yaml covers every folder the manifest uses. The wav2vec loader
    (DownloadAndLoadWav2VecModel) ignores it and reads <ComfyUI>/models/transformers directly,
    so top-level folders that are not ComfyUI model types are linked there as well.
    """
    if not comfy_dir.is_dir():
        log.warning("provision: %s is not a ComfyUI folder (COMFY_DIR); ComfyUI was not configured", comfy_dir)
        return
    config = comfy_dir / "extra_model_paths.yaml"
    own = comfy_dir / "models"
    if models_dir.resolve() == own.resolve():
        config.unlink(missing_ok=True)
        return
    folders = sorted({PurePosixPath(m.folder).parts[0] for m in models})
    lines = ["# Written by python -m infinitetalk_worker.provision at every start.", "infinitetalk:",
             f"  base_path: {models_dir}"]
    lines += [f"  {folder}: {folder}" for folder in folders]
    config.write_text("\n".join(lines) + "\n")
    if "transformers" in folders:
        _link_folder(own / "transformers", models_dir / "transformers")


def _link_folder(link: Path, source: Path) -> None:
    if link.is_symlink():
        link.unlink()
    elif link.is_dir() and not any(link.iterdir()):
        link.rmdir()
    if link.exists():
        log.warning("provision: %s is a folder with files of its own, so %s is not linked there", link, source)
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(source, target_is_directory=True)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infinitetalk_worker.provision", description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=None, help="model manifest (default: workflows/models.json)")
    parser.add_argument("--models-dir", type=Path, default=None, help="models folder (default: MODELS_DIR or automatic)")
    parser.add_argument("--check", action="store_true", help="only check; download nothing (PROVISION_MODELS=false does the same)")
    parser.add_argument("--no-comfy-config", action="store_true", help="do not write ComfyUI's extra_model_paths.yaml (image build)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(settings.log_level)
    try:
        models = load_manifest(args.manifest) if args.manifest else load_manifest()
        models_dir = args.models_dir or resolve_models_dir(settings, models)
        provision(models, models_dir, download_missing=settings.provision_models and not args.check,
                  workers=settings.download_workers)
        if not args.no_comfy_config:
            configure_comfyui(models, models_dir, settings.comfy_dir)
    except WorkerError as exc:
        for line in exc.message.splitlines():
            print(f"provision: {line}", file=sys.stderr)
        return 1
    log.info("provision: all model files in place under %s", models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
