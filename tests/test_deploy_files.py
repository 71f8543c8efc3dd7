"""What CI can prove about the image and the Hub listing without Docker, a GPU or the Hub.

hadolint and shellcheck run for real (skipped only when the tool is not installed); the Hub
files are validated against the Hub's documented format; each check of scripts/check_deploy.py
is also shown to catch the mistake it exists for, on a doctored copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import check_deploy  # noqa: E402

HUB = json.loads((REPO / ".runpod" / "hub.json").read_text())
TESTS = json.loads((REPO / ".runpod" / "tests.json").read_text())


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (CI installs it: see README, Development)")
    return found


def _shell_scripts() -> list[Path]:
    scripts = [p for p in REPO.rglob("*.sh") if ".venv" not in p.parts and ".git" not in p.parts]
    ci = REPO / ".ci" / "run"
    if ci.is_file():
        scripts.append(ci)
    return sorted(scripts)


# --- linters ---------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint():
    result = subprocess.run([_tool("hadolint"), "--no-color", str(REPO / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shell_script_passes_shellcheck():
    scripts = _shell_scripts()
    assert REPO / "entrypoint.sh" in scripts
    result = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Hub files ---------------------------------------------------------------------------

def test_hub_files_match_the_hubs_documented_format():
    assert check_deploy.schema_problems(HUB, "hub") == []
    assert check_deploy.schema_problems(TESTS, "tests") == []


@pytest.mark.parametrize("breakage, expected", [
    (lambda h: h["config"].pop("gpuIds"), "'gpuIds' is a required property"),
    (lambda h: h.update(category="talking-head"), "is not one of"),
    (lambda h: h["config"].update(gpuIds="ADA_24,RTX_4090"), "does not match"),
    (lambda h: h["config"]["env"][0]["input"].update(type="text"), "is not valid under any of the given schemas"),
    (lambda h: h["config"].update(containerDisk=60), "Additional properties are not allowed"),
])
def test_the_schema_refuses_what_the_hub_would_refuse(breakage, expected):
    hub = json.loads(json.dumps(HUB))
    breakage(hub)
    problems = check_deploy.schema_problems(hub, "hub")
    assert any(expected in p for p in problems), problems


def test_settings_form_covers_every_setting_with_the_same_default():
    from infinitetalk_worker.settings import Settings

    assert check_deploy.settings_form_problems(HUB) == []
    keys = {e["key"] for e in HUB["config"]["env"]}
    offered = {f.metadata["env"] for f in dataclasses.fields(Settings) if check_deploy.offered_on_hub(f.metadata["env"])}
    assert offered <= keys
    # The ones left out are real settings, left out on purpose (self-hosted only).
    left_out = {f.metadata["env"] for f in dataclasses.fields(Settings)} - offered
    assert left_out and all(k == "WORKER_MODE" or k.startswith("LIGHTX2V_") for k in left_out)


def test_a_setting_missing_from_the_form_or_with_another_default_is_reported():
    hub = json.loads(json.dumps(HUB))
    hub["config"]["env"] = [e for e in hub["config"]["env"] if e["key"] != "JOB_TIMEOUT_S"]
    next(e for e in hub["config"]["env"] if e["key"] == "MAX_FRAMES")["input"]["default"] = 999
    problems = check_deploy.settings_form_problems(hub)
    assert "hub.json: setting JOB_TIMEOUT_S has no entry in the settings form" in problems
    assert any("MAX_FRAMES defaults to 999" in p for p in problems)
    assert any("preset" in p and "JOB_TIMEOUT_S" in p for p in problems)


def test_presets_offer_small_and_large_gpus():
    names = [p["name"] for p in HUB["config"]["presets"]]
    assert any("24" in n for n in names) and any("48" in n for n in names)
    # The attention choice of each preset is one the form offers (checked by settings_form_problems).
    assert check_deploy.settings_form_problems(HUB) == []


def test_cuda_versions_and_disk_fit_the_image_and_the_models():
    assert check_deploy.cuda_problems(HUB, TESTS) == []
    assert check_deploy.disk_problems(HUB) == []
    # Sized to the models, not the 280 GB the old listing asked for.
    assert HUB["config"]["containerDiskInGb"] <= 100
    too_small = json.loads(json.dumps(HUB))
    too_small["config"]["containerDiskInGb"] = 10
    assert check_deploy.disk_problems(too_small)
    old_cuda = json.loads(json.dumps(TESTS))
    old_cuda["config"]["allowedCudaVersions"] = ["12.4"]
    assert "tests.json: CUDA 12.4 is older than the image's CUDA 12.8" in check_deploy.cuda_problems(HUB, old_cuda)


def test_hub_test_job_is_a_valid_request_on_the_bundled_examples():
    from infinitetalk_worker.request import parse_request
    from infinitetalk_worker.settings import EXAMPLES_DIR, Settings

    for test in TESTS["tests"]:
        request = parse_request(test["input"], Settings())
        # No media given: the worker uses the bundled examples, which the image copies.
        assert request.image is None and request.audio is None
        assert any(EXAMPLES_DIR.glob("*.jpg")) or any(EXAMPLES_DIR.glob("*.png"))
        assert request.max_frame is not None and request.max_frame <= 81  # one window: a short job
        assert test["timeout"] >= 15 * 60 * 1000  # first start downloads the models


# --- pins ------------------------------------------------------------------------------------

def test_every_clone_and_install_in_the_dockerfile_is_pinned():
    assert check_deploy.pin_problems() == []
    assert check_deploy.lock_problems(check_deploy.COMFY_LOCK) == []


@pytest.mark.parametrize("old, new, expected", [
    ('"$COMFYUI_COMMIT" /comfyui', "master /comfyui", "not a commit sha"),
    ('ARG COMFYUI_COMMIT=3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce', "ARG COMFYUI_COMMIT=main", "not a commit sha"),
    ("RUN python3 -m venv /opt/venv", "RUN git clone https://github.com/x/y.git /y && python3 -m venv /opt/venv",
     "'git clone' takes whatever HEAD is"),
    ('"torch==${TORCH_VERSION}"', "torch", "pip installs 'torch' without a version pin"),
    ("rotary-embedding-torch einops sageattention", "rotary-embedding-torch einops sageattention xformers",
     "pip installs 'xformers' without a version pin"),
    ("FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04", "FROM nvidia/cuda", "is not pinned to a tag"),
])
def test_an_unpinned_clone_or_install_is_caught(tmp_path, old, new, expected):
    text = (REPO / "Dockerfile").read_text()
    assert old in text
    doctored = tmp_path / "Dockerfile"
    doctored.write_text(text.replace(old, new))
    problems = check_deploy.pin_problems(doctored)
    assert any(expected in p for p in problems), problems


def test_torch_pins_of_the_dockerfile_match_the_lock():
    args = check_deploy._args((REPO / "Dockerfile").read_text())
    lock = check_deploy._lock_pins(check_deploy.COMFY_LOCK)
    assert args["TORCH_VERSION"] == lock["torch"]
    assert args["TORCHVISION_VERSION"] == lock["torchvision"]
    assert args["TORCHAUDIO_VERSION"] == lock["torchaudio"]


def test_node_packs_are_exactly_the_four_the_graphs_use_at_the_tested_commits():
    args = check_deploy._args((REPO / "Dockerfile").read_text())
    commits = {k: v for k, v in args.items() if k.endswith("_COMMIT")}
    assert commits == {
        "COMFYUI_COMMIT": "3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce",
        "WANVIDEOWRAPPER_COMMIT": "088128b224242e110d3906c6750e9a3a348a659b",
        "VIDEOHELPERSUITE_COMMIT": "4ee72c065db22c9d96c2427954dc69e7b908444b",
        "KJNODES_COMMIT": "dc21a41",
        "MELBANDROFORMER_COMMIT": "b40e263224778ec417114d91d8b3b39934e30de5",
    }


def _run_check_lock(freeze: str, *files: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_lock.py"), *map(str, files)],
                          input=freeze, capture_output=True, text=True, env={**os.environ, **env})


def test_check_lock_fails_the_build_on_an_unpinned_or_drifted_package(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("torch==2.9.1\nnumpy==2.4.6\n")
    comfy_reqs = tmp_path / "requirements.txt"
    comfy_reqs.write_text("comfyui-frontend-package==1.35.9\ntorch\n")
    ok = _run_check_lock("torch==2.9.1\nnumpy==2.4.6\ncomfyui_frontend_package==1.35.9\n", lock, comfy_reqs)
    assert ok.returncode == 0, ok.stderr
    bad = _run_check_lock("torch==2.9.1\nnumpy==2.5.0\nxformers==0.0.33\n", lock, comfy_reqs)
    assert bad.returncode == 1
    assert "numpy==2.5.0 is installed but pinned at 2.4.6" in bad.stderr
    assert "xformers==0.0.33 is installed but pinned nowhere" in bad.stderr
    relaxed = _run_check_lock("xformers==0.0.33\n", lock, STRICT_PINS="0")
    assert relaxed.returncode == 0 and "pinned nowhere" in relaxed.stderr


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_fetch_commit_checks_out_exactly_the_pinned_commit(tmp_path):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    src = tmp_path / "src"
    src.mkdir()
    _git(src, "init", "-q")
    (src / "nodes.py").write_text("VERSION = 1\n")
    _git(src, "add", ".")
    _git(src, "commit", "-q", "-m", "one")
    first = _git(src, "rev-parse", "HEAD")
    (src / "nodes.py").write_text("VERSION = 2  # an upstream regression\n")
    _git(src, "commit", "-q", "-am", "two")
    fetch = [str(REPO / "scripts" / "fetch_commit.sh"), f"file://{src}"]
    for i, commit in enumerate((first, first[:7])):
        out = tmp_path / f"out{i}"
        subprocess.run([*fetch, commit, str(out)], check=True, capture_output=True)
        assert (out / "nodes.py").read_text() == "VERSION = 1\n"
        assert (out / ".pinned-commit").read_text().split()[1] == first
        assert not (out / ".git").exists()
    moving = subprocess.run([*fetch, "master", str(tmp_path / "out-branch")], capture_output=True, text=True)
    assert moving.returncode == 2 and "not a commit sha" in moving.stderr


# --- paths and models ------------------------------------------------------------------------

def test_every_path_the_dockerfile_copies_and_the_entrypoint_runs_exists():
    assert check_deploy.path_problems() == []


def test_a_copied_path_missing_or_excluded_by_dockerignore_is_caught(tmp_path):
    ignore = tmp_path / ".dockerignore"
    ignore.write_text((REPO / ".dockerignore").read_text() + "\nexamples\n")
    assert "Dockerfile: COPY examples: excluded from the build by .dockerignore" in check_deploy.path_problems(ignore)


def test_the_manifest_covers_every_model_file_the_graphs_name():
    assert check_deploy.model_problems() == []


def test_a_graph_naming_a_file_outside_the_manifest_is_caught(tmp_path):
    workflows = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows", workflows)
    graph_path = workflows / "I2V_single.json"
    graph = json.loads(graph_path.read_text())
    node = next(n for n in graph.values() if any(str(v).endswith(".safetensors") for v in n["inputs"].values()))
    key = next(k for k, v in node["inputs"].items() if str(v).endswith(".safetensors"))
    node["inputs"][key] = "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors"
    graph_path.write_text(json.dumps(graph))
    problems = check_deploy.model_problems(workflows)
    assert any("I2V_single.json" in p and "Wan2_1-I2V-14B-720P_fp8_e4m3fn.safetensors" in p for p in problems)


def test_check_deploy_command_passes():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "check_deploy.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_bake_step_has_every_file_provisioning_imports(tmp_path):
    # BAKE_MODELS=1 runs provisioning from the few files the Dockerfile copies for it (so the
    # 33 GB layer survives edits elsewhere): that copy alone must be able to run it.
    text = (REPO / "Dockerfile").read_text()
    bake = tmp_path / "bake"
    for word, rest in check_deploy._instructions(text):
        if word == "COPY" and "/build/bake/" in rest:
            *sources, dest = rest.split()
            for source in sources:
                target = bake / dest.removeprefix("/build/bake/")
                target = target / Path(source).name if dest.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    result = subprocess.run(
        [sys.executable, "-m", "infinitetalk_worker.provision", "--check", "--models-dir", str(tmp_path / "m"),
         "--no-comfy-config"],
        cwd=tmp_path, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(bake)}, capture_output=True, text=True,
    )
    assert result.returncode == 1, result.stderr  # it ran: every model file is missing
    assert "model files missing under" in result.stderr
