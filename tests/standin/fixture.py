"""The `comfy_standin` pytest fixture: a ComfyUI stand-in server per test.

    def test_something(comfy_standin):
        standin = comfy_standin()                          # or comfy_standin(behaviour={"fail": "oom"})
        settings = standin.settings()                      # Settings pointing at it
        ...
        standin.set_behaviour({"fail": "hang"})            # switch behaviour at run time
        standin.requests()                                 # what it received

Each stand-in gets its own ComfyUI folder (input/ output/ temp/ models/) under the test's
tmp_path, with a loadable placeholder for every model of workflows/models.json, and is killed
at teardown. Placeholders are minimal valid .safetensors files: an EMPTY .safetensors passes
validation but fails when loaded, exactly like transcript c1.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from tests.conftest import OBJECT_INFO, REPO, shared_or_skip

MINIMAL_SAFETENSORS = (2).to_bytes(8, "little") + b"{}"


def write_placeholder_model(path: Path) -> Path:
    """A model file the stand-in's loaders accept (a valid, tensor-less .safetensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {".safetensors": MINIMAL_SAFETENSORS, ".json": b"{}"}.get(path.suffix, b"placeholder")
    path.write_bytes(content)
    return path


def manifest_destinations() -> list[Path]:
    """Paths below models/ of every file in workflows/models.json (none while it is absent).

    A file lands at <folder>/<basename of file>; a whole-repo entry (file null) is its folder,
    marked with a config.json.
    """
    from infinitetalk_worker.models import MANIFEST, load_manifest
    if not MANIFEST.is_file():
        return []
    return [Path(m.folder) / (Path(m.file).name if m.file else "config.json") for m in load_manifest()]


class StandInServer:
    """One running stand-in. `.url`, `.port`, `.base_dir`, `.kill()`, `.settings()`..."""

    def __init__(self, base_dir: Path, tmp: Path, behaviour: dict, object_info: Path,
                 models: bool, wait_ready: bool):
        self.base_dir = base_dir
        self.tmp = tmp
        for name in ("input", "output", "temp", "models"):
            (base_dir / name).mkdir(parents=True, exist_ok=True)
        if models:
            for rel in manifest_destinations():
                write_placeholder_model(base_dir / "models" / rel)
        self.log_path = tmp / "standin.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.standin.comfyui", "--port", "0", "--base-dir", str(base_dir),
             "--object-info", str(object_info), "--behaviour", json.dumps(behaviour),
             "--scratch-dir", str(tmp / "scratch")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.port = int(self._expect("PORT", 30).split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_ready:
            self.wait_ready()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def _expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.startswith(word):
                return line
        raise RuntimeError(f"ComfyUI stand-in did not print {word}: {self.log_path.read_text()[-2000:]}")

    def wait_ready(self, timeout: float = 60) -> None:
        self._expect("READY", timeout)

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def add_model(self, folder: str, name: str) -> Path:
        return write_placeholder_model(self.models_dir / folder / name)

    def alive(self) -> bool:
        return self.process.poll() is None

    def set_behaviour(self, behaviour: dict) -> None:
        requests.post(f"{self.url}/_standin/behaviour", json=behaviour, timeout=10).raise_for_status()

    def requests(self) -> list[dict]:
        return requests.get(f"{self.url}/_standin/requests", timeout=10).json()

    def settings(self, **overrides: Any):
        from infinitetalk_worker.settings import Settings
        volume = self.tmp / "volume"
        for d in (volume, self.tmp / "work"):
            d.mkdir(parents=True, exist_ok=True)
        values = {"comfy_url": self.url, "comfy_dir": self.base_dir, "work_dir": self.tmp / "work",
                  "volume_dir": volume, "output_dir": volume, "comfy_ready_timeout_s": 30.0}
        return Settings(**{**values, **overrides})

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def comfy_standin(tmp_path: Path) -> Iterator[Callable[..., StandInServer]]:
    """Factory: comfy_standin(behaviour=None, *, object_info=OBJECT_INFO, models=True, wait_ready=None).

    wait_ready defaults to True, or False when the behaviour has a startup_delay_s (the test
    then exercises its own readiness wait). Skips when ../shared (the schemas) is absent.
    """
    shared_or_skip()
    started: list[StandInServer] = []

    def start(behaviour: dict | None = None, *, object_info: Path = OBJECT_INFO, models: bool = True,
              wait_ready: bool | None = None) -> StandInServer:
        behaviour = dict(behaviour or {})
        if wait_ready is None:
            wait_ready = not behaviour.get("startup_delay_s")
        tmp = tmp_path / f"standin-{len(started)}"
        server = StandInServer(tmp / "comfyui", tmp, behaviour, object_info, models, wait_ready)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()
