"""Checks of the deploy files that CI can run without Docker, a GPU or the RunPod Hub.

    python scripts/check_deploy.py          # prints one line per problem; exit 1 if any

What it proves, each by reading the files as the builder or the Hub would:
  hub       .runpod/hub.json and tests.json match the Hub's documented format
            (scripts/runpod_hub_schema.json), the settings form covers every setting of
            infinitetalk_worker/settings.py with the same defaults, presets name real settings,
            the disk fits the models, the CUDA versions fit the image's base.
  pins      no unpinned clone or install in the Dockerfile: every FROM tagged, every repository
            fetched at a commit sha through fetch_commit.sh, every pip package pinned with == or
            held by a constraints file that pins it; every lock line pinned.
  paths     every file the Dockerfile copies and the entrypoint runs exists.
  models    every model file the four graphs name is in workflows/models.json for that graph.
hadolint and shellcheck run in the tests (tests/test_deploy_files.py), where they skip when the
tool is missing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUB = REPO / ".runpod" / "hub.json"
TESTS = REPO / ".runpod" / "tests.json"
SCHEMA = REPO / "scripts" / "runpod_hub_schema.json"
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "entrypoint.sh"
COMFY_LOCK = REPO / "requirements-comfyui.txt"

# Settings that mean nothing on a RunPod serverless endpoint, so the Hub form leaves them out.
NOT_ON_HUB_PREFIXES = ("LIGHTX2V_",)  # the self-hosted task service
NOT_ON_HUB = {"WORKER_MODE"}          # a Hub deploy is always the serverless handler
# Room on the container disk beyond the model files: job media, results, the ComfyUI temp folder.
DISK_HEADROOM_GB = 15

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- hub -------------------------------------------------------------------------------------

def _schema_for(name: str) -> dict:
    schema = json.loads(SCHEMA.read_text())
    return {**schema, "$ref": f"#/$defs/{name}"}


def schema_problems(document: dict, name: str) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema_for(name))
    return [f"{name}.json: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))]


def offered_on_hub(env: str) -> bool:
    return env not in NOT_ON_HUB and not env.startswith(NOT_ON_HUB_PREFIXES)


def _same_default(form_default, setting_default) -> bool:
    if isinstance(setting_default, bool):
        return form_default is setting_default
    if isinstance(setting_default, (int, float)):
        return isinstance(form_default, (int, float)) and float(form_default) == float(setting_default)
    if isinstance(setting_default, tuple):
        return form_default == ":".join(str(p) for p in setting_default)
    return form_default == str(setting_default)


def settings_form_problems(hub: dict) -> list[str]:
    from infinitetalk_worker.settings import Settings

    form = {e["key"]: e["input"] for e in hub["config"].get("env", []) if "input" in e}
    problems = []
    for f in dataclasses.fields(Settings):
        env = f.metadata["env"]
        if not offered_on_hub(env):
            continue
        if env not in form:
            problems.append(f"hub.json: setting {env} has no entry in the settings form")
            continue
        if "default" in form[env] and not _same_default(form[env]["default"], f.default):
            problems.append(f"hub.json: {env} defaults to {form[env]['default']!r} in the form "
                            f"but {f.default!r} in settings.py")
        options = [o["value"] for o in form[env].get("options", [])]
        if options and form[env].get("default") not in options:
            problems.append(f"hub.json: {env} default is not one of its options")
    for preset in hub["config"].get("presets", []):
        for key, value in preset["defaults"].items():
            if key not in form:
                problems.append(f"hub.json: preset {preset['name']!r} sets {key}, which the form lacks")
                continue
            options = [o["value"] for o in form[key].get("options", [])]
            if options and value not in options:
                problems.append(f"hub.json: preset {preset['name']!r} sets {key}={value!r}, not one of {options}")
    return problems


def dockerfile_cuda() -> tuple[int, int]:
    m = re.search(r"^FROM\s+nvidia/cuda:(\d+)\.(\d+)", DOCKERFILE.read_text(), re.M)
    if not m:
        raise ValueError("Dockerfile: the base image is not nvidia/cuda:<version>-...")
    return int(m.group(1)), int(m.group(2))


def cuda_problems(hub: dict, tests: dict) -> list[str]:
    base = dockerfile_cuda()
    problems = []
    for name, versions in (("hub.json", hub["config"].get("allowedCudaVersions", [])),
                           ("tests.json", tests["config"].get("allowedCudaVersions", []))):
        if not versions:
            problems.append(f"{name}: allowedCudaVersions is empty: hosts with too old a driver would be picked")
        for v in versions:
            if tuple(int(x) for x in v.split(".")) < base:
                problems.append(f"{name}: CUDA {v} is older than the image's CUDA {base[0]}.{base[1]}")
    return problems


def model_bytes_known() -> int:
    from infinitetalk_worker.models import load_manifest

    return sum(m.size or 0 for m in load_manifest())


def disk_problems(hub: dict) -> list[str]:
    disk = hub["config"]["containerDiskInGb"]
    need = math.ceil(model_bytes_known() / 1e9) + DISK_HEADROOM_GB
    if disk < need:
        return [f"hub.json: containerDiskInGb {disk} is below the known model total plus "
                f"{DISK_HEADROOM_GB} GB headroom ({need})"]
    return []


def hub_problems() -> list[str]:
    hub, tests = json.loads(HUB.read_text()), json.loads(TESTS.read_text())
    problems = schema_problems(hub, "hub") + schema_problems(tests, "tests")
    if problems:
        return problems
    return settings_form_problems(hub) + cuda_problems(hub, tests) + disk_problems(hub)


# --- pins ------------------------------------------------------------------------------------

_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==[^=\s]+$")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in dockerfile.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            joined.append(current)
            current = ""
    result = []
    for text in joined:
        word, _, rest = text.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def _args(dockerfile: str) -> dict[str, str]:
    found = {}
    for word, rest in _instructions(dockerfile):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found[name.strip()] = value.strip()
    return found


def _expand(token: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), token)


def _lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def lock_problems(path: Path) -> list[str]:
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line and not _PIN.match(line):
            problems.append(f"{path.name}:{number}: '{line}' is not pinned with ==")
    return problems


def _build_file(path: str, copies: dict[str, Path]) -> Path | None:
    """The repository file behind a path inside the build, via the COPY instructions."""
    for dest, source in copies.items():
        if path == dest:
            return source
        if path.startswith(dest.rstrip("/") + "/") and source.is_dir():
            return source / path[len(dest.rstrip("/")) + 1:]
    return None


def pin_problems(dockerfile_path: Path = DOCKERFILE) -> list[str]:
    text = dockerfile_path.read_text()
    args = _args(text)
    problems: list[str] = []
    copies: dict[str, Path] = {}
    for word, rest in _instructions(text):
        if word == "FROM":
            image = rest.split()[0]
            if image != "scratch" and (":" not in image or image.endswith(":latest")) and "@sha256:" not in image:
                problems.append(f"Dockerfile: base image {image} is not pinned to a tag or digest")
        if word == "COPY":
            *sources, dest = [p for p in rest.split() if not p.startswith("--")]
            for source in sources:
                copies[dest + Path(source).name if dest.endswith("/") else dest] = REPO / source
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|", rest):
            tokens = shlex.split(command, posix=True) if command.strip() else []
            if "git" in tokens and "clone" in tokens:
                problems.append("Dockerfile: 'git clone' takes whatever HEAD is; use scripts/fetch_commit.sh URL COMMIT DIR")
            for i, tok in enumerate(tokens):
                if tok.endswith("fetch_commit.sh") and len(tokens) >= i + 3:
                    commit = _expand(tokens[i + 2], args)
                    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
                        problems.append(f"Dockerfile: {tokens[i + 1]} is fetched at '{commit}', not a commit sha")
            problems += _pip_problems(tokens, args, copies)
    return problems


def _pip_problems(tokens: list[str], args: dict[str, str], copies: dict[str, Path]) -> list[str]:
    if not any(t.endswith("pip") for t in tokens) or "install" not in tokens:
        return []
    problems, constraints, requirements, names = [], [], [], []
    rest = tokens[tokens.index("install") + 1:]
    i = 0
    while i < len(rest):
        tok = _expand(rest[i], args)
        if tok in ("-c", "--constraint", "-r", "--requirement"):
            (constraints if tok in ("-c", "--constraint") else requirements).append(_expand(rest[i + 1], args))
            i += 2
            continue
        if not tok.startswith("-"):
            names.append(tok)
        i += 1
    pinned: dict[str, str] = {}
    for c in constraints:
        source = _build_file(c, copies)
        if source is None or not source.is_file():
            problems.append(f"Dockerfile: constraints file {c} does not come from the repository")
        else:
            pinned.update(_lock_pins(source))
    for name in names:
        bare = re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()
        if not _PIN.match(name) and bare not in pinned:
            problems.append(f"Dockerfile: pip installs '{name}' without a version pin")
    for r in requirements:
        source = _build_file(r, copies)
        if source is not None and source.is_file():
            problems += [p.replace(source.name, f"{source.name} (installed by the Dockerfile)")
                         for p in lock_problems(source)]
        elif not constraints:
            problems.append(f"Dockerfile: {r} is installed without a constraints file (-c) to pin it")
    return problems


# --- paths -----------------------------------------------------------------------------------

def _ignored(source: str, patterns: list[str]) -> bool:
    parts = Path(source).parts
    return any(fnmatch.fnmatch("/".join(parts[:i]), pattern.strip("/"))
               for pattern in patterns for i in range(1, len(parts) + 1))


def path_problems(dockerignore: Path = REPO / ".dockerignore") -> list[str]:
    problems = []
    text = DOCKERFILE.read_text()
    ignore = [line.strip() for line in dockerignore.read_text().splitlines()
              if line.strip() and not line.startswith(("#", "!"))] if dockerignore.is_file() else []
    for word, rest in _instructions(text):
        if word == "COPY" and "--from" not in rest:
            for source in [p for p in rest.split() if not p.startswith("--")][:-1]:
                if not (REPO / source).exists():
                    problems.append(f"Dockerfile: COPY {source}: no such file in the repository")
                elif _ignored(source, ignore):
                    problems.append(f"Dockerfile: COPY {source}: excluded from the build by .dockerignore")
        if word == "ENTRYPOINT":
            target = json.loads(rest)[0]
            if target != "/app/entrypoint.sh" or not ENTRYPOINT.is_file():
                problems.append(f"Dockerfile: ENTRYPOINT {target} is not the copied entrypoint.sh")
    entry = ENTRYPOINT.read_text()
    for module in re.findall(r"-m (infinitetalk_worker(?:\.\w+)+)", entry):
        path = REPO / Path(*module.split("."))
        if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
            problems.append(f"entrypoint.sh runs python -m {module}, which does not exist")
    for script in re.findall(r"-u (\w+\.py)", entry):
        if not (REPO / script).is_file():
            problems.append(f"entrypoint.sh runs {script}, which does not exist")
    return problems


# --- models ----------------------------------------------------------------------------------

MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".sft")
# Loaders that take a Hugging Face repo id and read <models>/<folder>/<repo id> themselves.
REPO_ID_LOADERS = {"DownloadAndLoadWav2VecModel": "transformers"}


def model_problems(workflows_dir: Path | None = None) -> list[str]:
    from infinitetalk_worker.models import load_manifest
    from infinitetalk_worker.settings import WORKFLOWS_DIR

    workflows_dir = workflows_dir or WORKFLOWS_DIR
    manifest = load_manifest(workflows_dir / "models.json")
    problems = []
    for graph_path in sorted(workflows_dir.glob("*.json")):
        graph = json.loads(graph_path.read_text())
        if graph_path.name == "models.json" or not all(isinstance(n, dict) and "class_type" in n
                                                      for n in graph.values()):
            continue
        name = graph_path.stem
        files = {m.name for m in manifest if m.name and name in m.workflows}
        folders = {m.folder for m in manifest if name in m.workflows}
        for node_id, node in graph.items():
            for key, value in node.get("inputs", {}).items():
                if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES) and value.split("/")[-1] not in files:
                    problems.append(f"{graph_path.name}: node {node_id} ({node['class_type']}) loads "
                                    f"{value}, which models.json does not list for {name}")
            folder = REPO_ID_LOADERS.get(node["class_type"])
            repo_id = node.get("inputs", {}).get("model")
            if folder and isinstance(repo_id, str) and f"{folder}/{repo_id}" not in folders:
                problems.append(f"{graph_path.name}: node {node_id} ({node['class_type']}) loads {repo_id}, "
                                f"which models.json does not provision into {folder}/{repo_id} for {name}")
    return problems


def all_problems() -> list[str]:
    return hub_problems() + pin_problems() + lock_problems(COMFY_LOCK) + path_problems() + model_problems()


def main() -> int:
    problems = all_problems()
    for problem in problems:
        print(problem)
    if not problems:
        print("check_deploy: hub files, pins, paths and model coverage are consistent")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
