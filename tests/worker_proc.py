"""`python handler.py` as its users start it, for the tests that go through the real `runpod` SDK.

The SDK forks helper processes, so the worker runs in a session of its own and `stop()` kills
the whole group: nothing outlives the test that started it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Mapping

from tests.conftest import REPO


def worker_env(settings_env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """This process's environment without RunPod's variables, plus the worker's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "INFINITETALK_", "AWS_"))}
    env.update(settings_env)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """`python handler.py <args>` in a subprocess, its output collected line by line."""

    def __init__(self, args: list[str], env: Mapping[str, str]):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "handler.py", *args], cwd=REPO, env=dict(env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            assert self.proc.poll() is None, "the worker exited:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.1)
        raise AssertionError(f"the worker never logged {pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._reader.join(timeout=5)


@contextmanager
def local_api(env: Mapping[str, str]) -> Iterator[tuple[str, WorkerProcess]]:
    """`python handler.py --rp_serve_api` on a free loopback port: (base URL, the process)."""
    worker = WorkerProcess(["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", "0"], env)
    try:
        port = worker.wait_for_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)").group(1)
        yield f"http://127.0.0.1:{port}", worker
    finally:
        worker.stop()
