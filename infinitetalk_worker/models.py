"""The model manifest (workflows/models.json): every weight file the four graphs load.

One list, read by the image build, the network-volume provisioning and the workflow validator,
so a graph can never name a file that nobody downloads (the old worker never provisioned the
wav2vec model and every fresh worker fetched it during its first job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .settings import WORKFLOWS_DIR

MANIFEST = WORKFLOWS_DIR / "models.json"


@dataclass(frozen=True)
class ModelFile:
    repo: str                      # Hugging Face repo id
    file: str | None               # path inside the repo; None = the whole repo snapshot
    revision: str | None           # commit sha to download; None = not pinned yet (see note)
    size: int | None               # bytes, when known
    sha256: str | None             # of the file, when known
    folder: str                    # below ComfyUI's models/ folder
    workflows: tuple[str, ...]     # graphs that load it
    note: str | None = None

    @property
    def name(self) -> str | None:
        """The value a graph's loader names: the file's basename (None for a repo snapshot)."""
        return PurePosixPath(self.file).name if self.file else None

    @property
    def destination(self) -> PurePosixPath:
        """Where the file (or the snapshot) lands, relative to ComfyUI's models/ folder."""
        folder = PurePosixPath(self.folder)
        return folder / self.name if self.name else folder

    def path_under(self, models_dir: Path) -> Path:
        return models_dir / self.destination


def load_manifest(path: Path = MANIFEST) -> list[ModelFile]:
    entries = json.loads(Path(path).read_text())["models"]
    return [
        ModelFile(
            repo=e["repo"],
            file=e.get("file"),
            revision=e.get("revision"),
            size=e.get("size"),
            sha256=e.get("sha256"),
            folder=e["folder"],
            workflows=tuple(e["workflows"]),
            note=e.get("note"),
        )
        for e in entries
    ]


def for_workflow(workflow: str, manifest: list[ModelFile] | None = None) -> list[ModelFile]:
    return [m for m in (manifest or load_manifest()) if workflow in m.workflows]


def missing(models_dir: Path, manifest: list[ModelFile] | None = None) -> list[ModelFile]:
    """Manifest entries absent from `models_dir`, or present with a size other than the listed one."""
    absent = []
    for model in manifest or load_manifest():
        path = model.path_under(models_dir)
        if not path.exists() or (model.size is not None and path.is_file() and path.stat().st_size != model.size):
            absent.append(model)
    return absent
