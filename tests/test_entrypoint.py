"""entrypoint.sh driven end to end with a stand-in ComfyUI and a stand-in worker.

The stand-ins are small Python programs that behave like the real processes at their edges: the
ComfyUI one answers GET /system_stats on loopback once "started" (after a chosen delay), can
exit during start, die later, or ignore SIGTERM; the worker one runs until it is told to stop.
Both write what happened to them (started, got SIGTERM) into marker files that the tests read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import OBJECT_INFO, REPO, shared_or_skip

ENTRYPOINT = REPO / "entrypoint.sh"

COMFY_STANDIN = textwrap.dedent(
    """
    import http.server, os, signal, sys, threading, time
    port, delay, mode, marks = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    def mark(word):
        with open(marks, "a") as f:
            f.write(word + "\\n")
    def on_term(*_):
        mark("comfy-term")
        if mode != "ignore-term":
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("Total VRAM 81559 MB, total RAM 128000 MB", flush=True)
    print("Import times for custom nodes:", flush=True)
    if mode == "crash-at-start":
        time.sleep(delay)
        print("Traceback (most recent call last):", flush=True)
        print("ImportError: cannot import name 'ImageConcatMulti'", flush=True)
        sys.exit(3)
    time.sleep(delay)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/system_stats" else 404)
            self.end_headers()
            self.wfile.write(b"{}")
        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"To see the GUI go to: http://127.0.0.1:{port}", flush=True)
    mark("comfy-ready")
    if mode == "die-later":
        time.sleep(1.0)
        print("torch.OutOfMemoryError: CUDA out of memory", flush=True)
        os._exit(9)
    while True:
        time.sleep(0.1)
    """
)

WORKER_STANDIN = textwrap.dedent(
    """
    import signal, sys, time
    marks, exit_after = sys.argv[1], float(sys.argv[2])
    def mark(word):
        with open(marks, "a") as f:
            f.write(word + "\\n")
    def on_term(*_):
        mark("worker-term")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    mark("worker-started")
    print("worker: serving jobs", flush=True)
    deadline = time.monotonic() + exit_after if exit_after > 0 else None
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.05)
    mark("worker-exited")
    sys.exit(7)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Container:
    """One run of entrypoint.sh with stand-ins; `marks()` tells what the stand-ins lived through."""

    def __init__(self, tmp_path: Path, *, delay: float = 0.3, mode: str = "normal",
                 timeout_s: int = 20, worker_exit_after: float = 0, **env: str):
        self.marks_file = tmp_path / "marks.txt"
        self.marks_file.touch()
        comfy = tmp_path / "comfy_standin.py"
        comfy.write_text(COMFY_STANDIN)
        worker = tmp_path / "worker_standin.py"
        worker.write_text(WORKER_STANDIN)
        port = _free_port()
        py = sys.executable
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "COMFY_DIR": str(tmp_path),
            "COMFY_URL": f"http://127.0.0.1:{port}",
            "COMFY_READY_TIMEOUT_S": str(timeout_s),
            "COMFY_CMD": f"{py} {comfy} {port} {delay} {mode} {self.marks_file}",
            "WORKER_CMD": f"{py} {worker} {self.marks_file} {worker_exit_after}",
            "PROVISION_CMD": "",
            "VALIDATE_CMD": "",
            "STOP_GRACE_S": "3",
            **env,
        }
        self.env = {k: v for k, v in self.env.items() if v is not None}  # None: leave it unset
        self.proc = subprocess.Popen(
            ["bash", str(ENTRYPOINT)], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )

    def marks(self) -> list[str]:
        return self.marks_file.read_text().split()

    def wait_for_mark(self, word: str, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while word not in self.marks():
            if time.monotonic() > end or self.proc.poll() is not None and word not in self.marks():
                out = self.finish(timeout=5)[1] if self.proc.poll() is None else self.proc.stdout.read()
                raise AssertionError(f"{word!r} never happened; marks={self.marks()}\n{out}")
            time.sleep(0.05)

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
            raise AssertionError(f"entrypoint did not exit within {timeout}s:\n{out}")
        return self.proc.returncode, out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


@pytest.fixture
def container(tmp_path):
    started: list[Container] = []

    def start(**kwargs) -> Container:
        c = Container(tmp_path, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def test_normal_start_runs_worker_after_comfyui_answers_and_streams_its_log(container):
    c = container(delay=0.5)
    c.wait_for_mark("worker-started")
    assert c.marks().index("comfy-ready") < c.marks().index("worker-started")
    c.proc.send_signal(signal.SIGTERM)
    rc, out = c.finish()
    assert "[comfyui] To see the GUI go to: http://127.0.0.1:" in out
    assert "ComfyUI is ready" in out


def test_sigterm_reaches_comfyui_and_the_worker_and_both_stop(container):
    c = container()
    c.wait_for_mark("worker-started")
    c.proc.send_signal(signal.SIGTERM)
    rc, out = c.finish()
    assert {"comfy-term", "worker-term"} <= set(c.marks()), out
    assert rc == 143


def test_comfyui_that_ignores_sigterm_is_killed_after_the_grace_period(container):
    c = container(mode="ignore-term", STOP_GRACE_S="1")
    c.wait_for_mark("worker-started")
    c.proc.send_signal(signal.SIGTERM)
    rc, out = c.finish()
    assert "comfy-term" in c.marks()
    assert "ignored SIGTERM" in out


def test_comfyui_exiting_during_start_fails_at_once_with_its_last_log_lines(container):
    # The deadline is far away: the failure must come from noticing the exit, not the deadline.
    c = container(mode="crash-at-start", delay=0.2, timeout_s=600)
    rc, out = c.finish(timeout=30)
    assert rc == 1
    assert "ComfyUI exited with code 3 while starting" in out
    assert "ImportError: cannot import name 'ImageConcatMulti'" in out.split("last 40 lines")[1]
    assert "worker-started" not in c.marks()


def test_slow_start_past_the_deadline_fails_and_stops_comfyui(container):
    c = container(delay=60, timeout_s=2)
    rc, out = c.finish(timeout=30)
    assert rc == 1
    assert "did not answer" in out and "within 2s (COMFY_READY_TIMEOUT_S)" in out
    assert "comfy-term" in c.marks()
    assert "worker-started" not in c.marks()


def test_comfyui_dying_later_stops_the_worker_and_fails_the_container(container):
    c = container(mode="die-later")
    rc, out = c.finish(timeout=30)
    assert rc == 1
    assert "ComfyUI exited with code 9 while the worker was running" in out
    assert "CUDA out of memory" in out.split("last 40 lines")[1]
    assert {"worker-started", "worker-term"} <= set(c.marks())


def test_worker_exit_stops_comfyui_and_passes_its_exit_code_on(container):
    c = container(worker_exit_after=0.5)
    rc, out = c.finish(timeout=30)
    assert rc == 7
    assert "comfy-term" in c.marks()


def test_a_failing_validation_keeps_the_worker_from_starting(container, tmp_path):
    c = container(VALIDATE_CMD=f"{sys.executable} -c 'import sys; print(\"I2V_single: node 12 missing\"); sys.exit(4)'")
    rc, out = c.finish(timeout=30)
    assert rc == 1
    assert "I2V_single: node 12 missing" in out
    assert "validate failed (exit code 4)" in out
    assert "worker-started" not in c.marks()
    assert "comfy-term" in c.marks()


def test_a_failing_provisioning_stops_before_comfyui_starts(container):
    c = container(PROVISION_CMD=f"{sys.executable} -c 'import sys; sys.exit(\"vae/x.safetensors: download failed\")'")
    rc, out = c.finish(timeout=30)
    assert rc == 1
    assert "vae/x.safetensors: download failed" in out
    assert "provision failed" in out
    assert "comfy-ready" not in c.marks()


def test_sigterm_during_a_long_stage_stops_it_promptly(container, tmp_path):
    c = container(PROVISION_CMD=f"{sys.executable} -c 'import time; open(\"{tmp_path}/prov\", \"w\").close(); time.sleep(60)'")
    end = time.monotonic() + 20
    while not (tmp_path / "prov").exists() and time.monotonic() < end:
        time.sleep(0.05)
    c.proc.send_signal(signal.SIGTERM)
    rc, out = c.finish(timeout=15)
    assert rc == 143
    assert "comfy-ready" not in c.marks()


def test_unknown_worker_mode_is_refused_with_the_allowed_values(container):
    c = container(WORKER_MODE="grpc", WORKER_CMD="")
    rc, out = c.finish(timeout=10)
    assert rc == 2
    assert "WORKER_MODE must be serverless, api or lightx2v (got 'grpc')" in out


def test_real_comfyui_command_listens_on_loopback_with_headless_flags(container, tmp_path):
    # With no COMFY_CMD the entrypoint builds the real command; a fake python records its argv.
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\nexit 5\n")
    fake_python.chmod(0o755)
    c = container(COMFY_CMD="", COMFY_PYTHON=str(fake_python), COMFY_EXTRA_ARGS="--reserve-vram 1.5",
                  COMFY_URL="http://127.0.0.1:8190")
    rc, out = c.finish(timeout=30)
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:5] == ["main.py", "--listen", "127.0.0.1", "--port", "8190"]
    for flag in ("--disable-auto-launch", "--disable-metadata", "--disable-api-nodes"):
        assert flag in argv
    assert argv[-2:] == ["--reserve-vram", "1.5"]
    assert rc == 1 and "exited with code 5" in out


@pytest.mark.parametrize("importable, seen", [(False, "sdpa"), (True, "sageattn")])
def test_sageattention_is_used_only_when_asked_for_and_importable(container, tmp_path, importable, seen):
    fake_python = tmp_path / "fake-python"  # plays ComfyUI's python for the import check
    fake_python.write_text(f"#!/bin/sh\nexit {0 if importable else 1}\n")
    fake_python.chmod(0o755)
    probe = tmp_path / "probe.sh"  # a worker that reports the mode it was given
    probe.write_text(f"#!/bin/sh\necho \"$ATTENTION_MODE\" > {tmp_path}/mode\nexec sleep 30\n")
    probe.chmod(0o755)
    c = container(ATTENTION_MODE="sageattn", COMFY_PYTHON=str(fake_python), WORKER_CMD=str(probe))
    end = time.monotonic() + 20
    while not (tmp_path / "mode").exists() and time.monotonic() < end:
        time.sleep(0.05)
    c.proc.send_signal(signal.SIGTERM)
    rc, out = c.finish()
    assert (tmp_path / "mode").read_text().strip() == seen
    assert ("not installed in this image" in out) == (not importable)


# --- the real stages together: provisioning, a ComfyUI stand-in, the workflow validator -----------

def _whole_chain(container, tmp_path, *, provision: bool):
    """The entrypoint with its real provision and validate commands; only ComfyUI and the Hub are stand-ins."""
    shared_or_skip()
    from infinitetalk_worker.models import load_manifest
    from tests.test_provision import COMMIT, FakeHub

    hub = FakeHub()
    entries = []
    for m in load_manifest():
        hub.add(m.repo, m.file, f"weights of {m.file}".encode())
        entries.append({"repo": m.repo, "file": m.file, "revision": COMMIT, "size": None, "sha256": None,
                        "folder": m.folder, "workflows": list(m.workflows)})
    manifest = tmp_path / "models.json"
    manifest.write_text(json.dumps({"models": entries}))
    comfy = tmp_path / "comfyui"
    comfy.mkdir()
    port = _free_port()
    py = sys.executable
    c = container(
        COMFY_DIR=str(comfy), COMFY_URL=f"http://127.0.0.1:{port}", PYTHONPATH=str(REPO),
        COMFY_CMD=f"{py} -m tests.standin.comfyui --port {port} --base-dir {comfy} --object-info {OBJECT_INFO}",
        PROVISION_CMD=f"{py} -m infinitetalk_worker.provision --manifest {manifest}" if provision else "",
        VALIDATE_CMD=None, WORKER_PYTHON=py, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"),
        VOLUME_DIR=str(tmp_path / "no-volume"),
    )
    return c, hub, comfy


def test_provisioned_models_are_seen_by_comfyui_and_the_workflows_validate(container, tmp_path):
    c, hub, comfy = _whole_chain(container, tmp_path, provision=True)
    try:
        c.wait_for_mark("worker-started", timeout=90)
        c.proc.send_signal(signal.SIGTERM)
        rc, out = c.finish()
    finally:
        hub.close()
    assert (comfy / "models" / "vae" / "Wan2_1_VAE_bf16.safetensors").is_file()
    assert "OK: I2V_single, I2V_multi, V2V_single, V2V_multi valid" in out


def test_without_the_model_files_the_validator_keeps_the_worker_from_starting(container, tmp_path):
    c, hub, _ = _whole_chain(container, tmp_path, provision=False)
    try:
        rc, out = c.finish(timeout=90)
    finally:
        hub.close()
    assert rc == 1
    assert "is not on this ComfyUI" in out and "validate failed (exit code 1)" in out
    assert "worker-started" not in c.marks()
