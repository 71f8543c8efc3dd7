"""Checks the four graphs against ComfyUI's node schemas before any job can trip over them.

A node-pack update that renames an input or drops a class used to surface as a bare HTTP 400 in
the middle of a user's job. This module finds such breakage up front, the way ComfyUI's own
prompt validation would, plus what ComfyUI cannot know: model files outside the manifest,
bindings that no longer resolve, nodes that do not feed the output.

Usable as a library (`validate_workflows`, `check_live`) and as a command:

    python -m infinitetalk_worker.validate --schema ../shared/comfyui/object_info_infinitetalk.json
    python -m infinitetalk_worker.validate --live      # the ComfyUI at COMFY_URL; exit 1 if broken
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import requests

from .errors import ComfyUnavailable
from .models import ModelFile, load_manifest
from .settings import WORKFLOWS_DIR, Settings
from .workflows import (
    WORKFLOW_NAMES, BindingError, Bindings, apply_settings, is_link, load_bindings, load_workflow,
    node_titled, to_longform, upstream,
)

log = logging.getLogger("infinitetalk")

# Model pickers list the files of a models folder; the lab schema has none, so values are
# checked against the manifest (and, live, against the server's list as well).
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("WanVideoModelLoader", "model"): "diffusion_models",
    ("MultiTalkModelLoader", "model"): "diffusion_models",
    ("MelBandRoFormerModelLoader", "model_name"): "diffusion_models",
    ("WanVideoLoraSelect", "lora"): "loras",
    ("WanVideoVAELoader", "model_name"): "vae",
    ("WanVideoTextEncodeCached", "model_name"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    # The value is a repo id, loaded from models/transformers/<repo id>.
    ("DownloadAndLoadWav2VecModel", "model"): "transformers",
}
# Loaders of the job's own files: ComfyUI checks them with the node's VALIDATE_INPUTS (the file
# must exist in input/) instead of the picker list, and each must be bound to a staged name.
MEDIA_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("VHS_LoadVideo", "video"),
                ("VHS_LoadImages", "directory")}

LONGFORM_PROBE = Path("/infinitetalk-frames")


@dataclass(frozen=True)
class Problem:
    workflow: str
    kind: str            # unknown_class, missing_input, unknown_input, bad_link, link_type, wrong_type,
                         # out_of_range, not_in_choices, model_not_in_manifest, model_not_on_server,
                         # binding, unbound_media, output_count, dead_node, title
    message: str
    node: str | None = None
    title: str | None = None
    class_type: str | None = None
    input: str | None = None

    def __str__(self) -> str:
        where = self.workflow
        if self.node is not None:
            where += f": node {self.node}"
            if self.title:
                where += f" {self.title!r}"
            if self.class_type:
                where += f" ({self.class_type})"
        if self.input:
            where += f" input {self.input!r}"
        return f"{where}: {self.message}"


def load_schema(source: str | Path, timeout_s: float = 30.0) -> dict[str, dict]:
    """Node schemas from an /object_info JSON file or a live ComfyUI (its base URL or /object_info URL)."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        url = text if text.rstrip("/").endswith("/object_info") else text.rstrip("/") + "/object_info"
        try:
            response = requests.get(url, timeout=timeout_s)
            response.raise_for_status()
            schema = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ComfyUnavailable(f"could not read the node schemas from {url}: {exc}") from None
    else:
        schema = json.loads(Path(source).read_text())
    return {name: spec for name, spec in schema.items() if not name.startswith("_")}


def validate_workflows(schema: dict[str, dict], *, live: bool = False, settings: Settings | None = None,
                       names: Iterable[str] = WORKFLOW_NAMES,
                       workflows_dir: Path = WORKFLOWS_DIR) -> list[Problem]:
    """Every problem in the stored graphs (and their long-form variants) against `schema`."""
    manifest = load_manifest(workflows_dir / "models.json")
    bindings = load_bindings(workflows_dir)
    problems: list[Problem] = []
    for name in names:
        prompt = load_workflow(name, workflows_dir)
        if settings is not None:
            prompt = apply_settings(prompt, name, settings, workflows_dir)
        problems += validate_graph(name, prompt, schema, manifest=manifest, bindings=bindings, live=live)
        problems += _validate_longform(name, prompt, schema, manifest, bindings, live)
    return problems


def check_live(settings: Settings) -> list[Problem]:
    """The startup check: the four graphs against the running ComfyUI, with this worker's settings.

    Raises ComfyUnavailable when ComfyUI does not answer. Each problem is logged; the caller
    refuses to take jobs when the list is not empty.
    """
    schema = load_schema(settings.comfy_url)
    problems = validate_workflows(schema, live=True, settings=settings)
    for problem in problems:
        log.error("workflow check: %s", problem)
    if problems:
        log.error("workflow check: %d problem(s) against %s; refusing jobs", len(problems), settings.comfy_url)
    else:
        log.info("workflow check: %s valid against %s", ", ".join(WORKFLOW_NAMES), settings.comfy_url)
    return problems


def validate_graph(name: str, prompt: dict[str, dict], schema: dict[str, dict], *,
                   manifest: list[ModelFile] | None = None, bindings: Bindings | None = None,
                   live: bool = False, variant: str | None = None) -> list[Problem]:
    """Every problem of one API-format graph of workflow `name`; bindings are checked when given."""
    manifest = load_manifest() if manifest is None else manifest
    problems: list[Problem] = []
    for node_id, node in prompt.items():
        problems += _check_node(name, prompt, node_id, node, schema, manifest, live)
    problems += _check_structure(name, prompt, schema)
    if bindings is not None:
        problems += _check_bindings(name, prompt, schema, bindings)
    if variant:
        problems = [dataclasses.replace(p, workflow=f"{name} ({variant})") for p in problems]
    return problems


# --- nodes -----------------------------------------------------------------------------------

def _check_node(workflow: str, prompt: dict, node_id: str, node: dict, schema: dict,
                manifest: list[ModelFile], live: bool) -> list[Problem]:
    class_type = node.get("class_type")
    title = node.get("_meta", {}).get("title")

    def problem(kind: str, message: str, input_name: str | None = None) -> Problem:
        return Problem(workflow, kind, message, node_id, title, class_type, input_name)

    if class_type not in schema:
        return [problem("unknown_class", f"node class {class_type!r} does not exist on this ComfyUI")]
    declared = _declared_inputs(schema[class_type], node.get("inputs", {}))
    inputs = node.get("inputs", {})
    found = [problem("missing_input", "required input is missing", n)
             for n in schema[class_type]["input"].get("required", {}) if n not in inputs]
    for input_name, value in inputs.items():
        spec = declared.get(input_name)
        if spec is None:
            found.append(problem("unknown_input", "the node has no such input (renamed or removed?)", input_name))
        elif is_link(value):
            message = _check_link(prompt, value, spec, schema)
            if message:
                kind = "link_type" if message.startswith("type") else "bad_link"
                found.append(problem(kind, message, input_name))
        else:
            for kind, message in _check_value(workflow, class_type, input_name, value, spec, manifest, live):
                found.append(problem(kind, message, input_name))
    return found


def _declared_inputs(class_schema: dict, inputs: dict) -> dict[str, list]:
    declared = {**class_schema["input"].get("required", {}), **class_schema["input"].get("optional", {})}
    # VHS_VideoCombine takes extra widgets that depend on the chosen format (pix_fmt, crf, ...).
    format_spec = declared.get("format")
    chosen = inputs.get("format")
    if format_spec and len(format_spec) > 1 and isinstance(chosen, str):
        widgets = format_spec[1].get("formats", {}).get(chosen)
        if isinstance(widgets, list):
            for widget in widgets:
                declared.setdefault(widget[0], [widget[1], *(widget[2:3] if len(widget) > 2 else [])])
    return declared


def _check_link(prompt: dict, link: list, spec: list, schema: dict) -> str | None:
    source_id, index = link
    source = prompt.get(source_id)
    if source is None:
        return f"links to node {source_id}, which is not in the graph"
    source_schema = schema.get(source.get("class_type"))
    if source_schema is None:
        return None  # reported on the source node itself
    outputs = source_schema.get("output", [])
    if not 0 <= index < len(outputs):
        return f"links to output {index} of node {source_id} ({source['class_type']}), which has {len(outputs)} outputs"
    if not _types_match(outputs[index], spec[0]):
        wanted = "a choice" if isinstance(spec[0], list) else spec[0]
        return (f"type mismatch: output {index} of node {source_id} ({source['class_type']}) "
                f"is {outputs[index]}, the input takes {wanted}")
    return None


def _types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's rule: equal, either is '*', or the comma-separated type sets overlap."""
    if received == expected:
        return True
    if isinstance(expected, list) or expected == "COMBO":
        return received == "COMBO"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if "*" in (received, expected):
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def _check_value(workflow: str, class_type: str, input_name: str, value: Any, spec: list,
                 manifest: list[ModelFile], live: bool) -> list[tuple[str, str]]:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        return _check_choice(workflow, (class_type, input_name), value, choices, manifest, live)
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return [("wrong_type", f"{value!r} is not an integer")]
        return _check_range(value, options)
    if kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return [("wrong_type", f"{value!r} is not a number")]
        return _check_range(value, options)
    if kind == "BOOLEAN":
        return [] if isinstance(value, bool) else [("wrong_type", f"{value!r} is not true/false")]
    if kind == "STRING":
        return [] if isinstance(value, str) else [("wrong_type", f"{value!r} is not a string")]
    return [("wrong_type", f"takes a link from a {kind} output, got the value {value!r}")]


def _check_range(value: float, options: dict) -> list[tuple[str, str]]:
    if "min" in options and value < options["min"]:
        return [("out_of_range", f"{value} is below the minimum {options['min']}")]
    if "max" in options and value > options["max"]:
        return [("out_of_range", f"{value} is above the maximum {options['max']}")]
    return []


def _check_choice(workflow: str, key: tuple[str, str], value: Any, choices: list,
                  manifest: list[ModelFile], live: bool) -> list[tuple[str, str]]:
    if key in MEDIA_INPUTS:
        ok = isinstance(value, str) and value.strip() != ""
        return [] if ok else [("wrong_type", "needs the name of a file staged in ComfyUI's input folder")]
    found = []
    if key in MODEL_INPUTS:
        if not _in_manifest(workflow, MODEL_INPUTS[key], value, manifest):
            found.append(("model_not_in_manifest",
                          f"model {value!r} is not in workflows/models.json for {workflow} "
                          f"(folder {MODEL_INPUTS[key]}), so nothing provisions it"))
        if live and value not in choices:
            found.append(("model_not_on_server",
                          f"model {value!r} is not on this ComfyUI ({MODEL_INPUTS[key]} has "
                          f"{len(choices)} files): is the model volume mounted and provisioned?"))
        return found
    if value not in choices:
        shown = ", ".join(map(repr, choices[:12])) + (" …" if len(choices) > 12 else "")
        found.append(("not_in_choices", f"{value!r} is not one of [{shown}]"))
    return found


def _in_manifest(workflow: str, folder: str, value: Any, manifest: list[ModelFile]) -> bool:
    for model in manifest:
        if workflow not in model.workflows:
            continue
        if folder == "transformers" and PurePosixPath(model.folder) == PurePosixPath("transformers") / str(value):
            return True
        if model.folder == folder and model.name == value:
            return True
    return False


# --- graph shape -----------------------------------------------------------------------------

def _output_nodes(prompt: dict, schema: dict) -> list[str]:
    return [nid for nid, node in prompt.items() if schema.get(node.get("class_type"), {}).get("output_node")]


def _check_structure(workflow: str, prompt: dict, schema: dict) -> list[Problem]:
    problems = []
    outputs = _output_nodes(prompt, schema)
    if len(outputs) != 1:
        names = ", ".join(f"{nid} ({prompt[nid]['class_type']})" for nid in outputs) or "none"
        problems.append(Problem(workflow, "output_count",
                                f"a graph needs exactly one output node, this one has {len(outputs)}: {names}"))
    reachable = set().union(*(upstream(prompt, nid) for nid in outputs)) if outputs else set()
    for nid, node in prompt.items():
        title = node.get("_meta", {}).get("title")
        if outputs and nid not in reachable:
            problems.append(Problem(workflow, "dead_node", "does not feed the output node (dead or preview-only)",
                                    nid, title, node.get("class_type")))
        if not title:
            problems.append(Problem(workflow, "title", "has no _meta.title to bind it by",
                                    nid, None, node.get("class_type")))
    titles = [node.get("_meta", {}).get("title") for node in prompt.values()]
    for title in sorted({t for t in titles if t and titles.count(t) > 1}):
        problems.append(Problem(workflow, "title", f"title {title!r} is used by {titles.count(title)} nodes"))
    return problems


# --- bindings --------------------------------------------------------------------------------

def _check_bindings(workflow: str, prompt: dict, schema: dict, bindings: Bindings) -> list[Problem]:
    problems = []
    bound: set[tuple[str, str]] = set()
    for parameter, targets in bindings.for_workflow(workflow).items():
        for target in targets:
            message = _resolve_target(prompt, schema, target.title, target.input)
            if message:
                problems.append(Problem(workflow, "binding", f"parameter {parameter!r}: {message}"))
            else:
                bound.add((target.title, target.input))
                if target.mapping is not None:
                    problems += _check_mapped_values(workflow, prompt, schema, parameter, target)
    for nid, node in prompt.items():
        title = node.get("_meta", {}).get("title")
        for input_name in node.get("inputs", {}):
            if (node.get("class_type"), input_name) in MEDIA_INPUTS and (title, input_name) not in bound:
                problems.append(Problem(workflow, "unbound_media",
                                        "loads a job file but no parameter is bound to it",
                                        nid, title, node.get("class_type"), input_name))
    try:
        output = node_titled(prompt, bindings.output)
        if output not in _output_nodes(prompt, schema):
            problems.append(Problem(workflow, "binding", f"the bound output {bindings.output!r} is not an output node"))
    except BindingError as exc:
        problems.append(Problem(workflow, "binding", f"output: {exc}"))
    for parameter, targets in bindings.longform_parameters.items():
        for target in targets:
            message = _resolve_target(prompt, schema, target.title, target.input)
            if message:
                problems.append(Problem(workflow, "binding", f"long-form parameter {parameter!r}: {message}"))
    return problems


def _resolve_target(prompt: dict, schema: dict, title: str, input_name: str) -> str | None:
    try:
        node = prompt[node_titled(prompt, title)]
    except BindingError as exc:
        return str(exc)
    class_schema = schema.get(node["class_type"])
    if class_schema is None:
        return None  # reported as an unknown class
    if input_name not in _declared_inputs(class_schema, node.get("inputs", {})):
        return f"node {title!r} ({node['class_type']}) has no input {input_name!r}"
    return None


def _check_mapped_values(workflow: str, prompt: dict, schema: dict, parameter: str, target) -> list[Problem]:
    nid = node_titled(prompt, target.title)
    node = prompt[nid]
    spec = _declared_inputs(schema[node["class_type"]], node["inputs"])[target.input]
    problems = []
    for key, value in target.mapping.items():
        for kind, message in _check_value(workflow, node["class_type"], target.input, value, spec, [], False):
            problems.append(Problem(workflow, kind, f"parameter {parameter!r} = {key} maps to a bad value: {message}",
                                    nid, target.title, node["class_type"], target.input))
    return problems


def _validate_longform(name: str, prompt: dict, schema: dict, manifest: list[ModelFile],
                       bindings: Bindings, live: bool) -> list[Problem]:
    try:
        variant, _ = to_longform(prompt, bindings, LONGFORM_PROBE)
    except (BindingError, KeyError, ValueError) as exc:
        return [Problem(f"{name} (long-form)", "binding", f"cannot make the long-form variant: {exc}")]
    return validate_graph(name, variant, schema, manifest=manifest, live=live, variant="long-form")


# --- command ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infinitetalk_worker.validate",
        description="Check the InfiniteTalk graphs against ComfyUI node schemas. Exit 0: all valid; "
                    "1: problems (one per line); 2: the schemas could not be read.",
    )
    parser.add_argument("--schema", help="an /object_info JSON file, or a ComfyUI URL")
    parser.add_argument("--live", action="store_true",
                        help="check against the ComfyUI at COMFY_URL with this worker's settings, "
                             "model files against the server's lists too")
    parser.add_argument("--workflow", action="append", choices=WORKFLOW_NAMES,
                        help="only this graph (repeatable); default: all four")
    parser.add_argument("--workflows-dir", type=Path, default=WORKFLOWS_DIR)
    args = parser.parse_args(argv)
    if not args.live and not args.schema:
        parser.error("give --schema FILE_OR_URL, or --live")
    settings = Settings.from_env() if args.live else None
    source = args.schema or settings.comfy_url
    try:
        schema = load_schema(source)
    except (ComfyUnavailable, OSError, ValueError) as exc:
        print(f"cannot read node schemas: {exc}", file=sys.stderr)
        return 2
    names = args.workflow or WORKFLOW_NAMES
    problems = validate_workflows(schema, live=args.live, settings=settings, names=names,
                                  workflows_dir=args.workflows_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in the workflows; the worker must not take jobs", file=sys.stderr)
        return 1
    print(f"OK: {', '.join(names)} valid against {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
