"""Node schemas (GET /object_info) and graph validation, the way ComfyUI 0.8.0 does both.

The schemas come from a recorded object_info file. Like a real server, the lists that depend
on the machine are filled in from the stand-in's own folders on every call: model pickers list
the files under `<base>/models/<folder>/` (the folder named in the input's tooltip; the
recording was taken with an empty models tree, so those lists are empty there), and the
loaders list the files of `<base>/input/`.

`validate_prompt` is a line-by-line port of execution.validate_prompt / validate_inputs, so
error types, messages, details and the partial acceptance of a graph (one valid output queued,
the other reported in node_errors) come out exactly as ComfyUI produces them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

MODEL_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
AUDIO_EXTENSIONS = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".wma"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v"}

# Pickers whose tooltip does not name their folder.
_UNTOLD_FOLDERS = {("CLIPVisionLoader", "clip_name"): "clip_vision"}
_TOOLTIP_FOLDER = re.compile(r"ComfyUI/models/([\w\-]+)")


class FileCheck:
    """A node's VALIDATE_INPUTS that checks a file (or folder) in ComfyUI's input tree."""

    def __init__(self, arg: str, message: str, *, kwargs: bool = False, folder: bool = False):
        self.args = [arg]
        self.has_kwargs = kwargs
        self.message = message
        self.folder = folder

    def __call__(self, dirs: "Dirs", values: dict[str, Any]) -> bool | str:
        name = values.get(self.args[0])
        path = dirs.annotated(str(name)) if isinstance(name, str) else None
        ok = path is not None and (path.is_dir() if self.folder else path.exists())
        return True if ok else self.message.format(name)


# The loaders whose VALIDATE_INPUTS replaces the combo check of their file input (which is why
# ComfyUI accepts "rp-abc/image.png" though the picker lists top-level files only).
FILE_CHECKS: dict[str, FileCheck] = {
    "LoadImage": FileCheck("image", "Invalid image file: {}"),
    "LoadImageMask": FileCheck("image", "Invalid image file: {}"),
    "LoadAudio": FileCheck("audio", "Invalid audio file: {}"),
    "VHS_LoadAudioUpload": FileCheck("audio", "Invalid audio file: {}"),
    "VHS_LoadVideo": FileCheck("video", "Invalid video file: {}"),
    "VHS_LoadVideoFFmpeg": FileCheck("video", "Invalid video file: {}"),
    "VHS_LoadImages": FileCheck("directory", "Invalid directory: {}", kwargs=True, folder=True),
}


class Dirs:
    """ComfyUI's folders under the stand-in's base directory."""

    def __init__(self, base: Path):
        self.base = base
        self.input = base / "input"
        self.output = base / "output"
        self.temp = base / "temp"
        self.models = base / "models"

    def make(self) -> None:
        for d in (self.input, self.output, self.temp, self.models):
            d.mkdir(parents=True, exist_ok=True)

    def by_type(self, kind: str | None) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind or "input")

    def annotated(self, name: str) -> Path:
        """folder_paths.get_annotated_filepath: 'x.png [output]' or a plain name in input/."""
        for kind in ("input", "output", "temp"):
            tag = f" [{kind}]"
            if name.endswith(tag) or name.endswith(f"[{kind}]"):
                return self.by_type(kind) / name[: -len(f"[{kind}]")].rstrip()
        return self.input / name

    def model_files(self, folder: str) -> list[str]:
        root = self.models / folder
        if not root.is_dir():
            return []
        found = []
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                if Path(f).suffix.lower() in MODEL_EXTENSIONS:
                    found.append((Path(dirpath) / f).relative_to(root).as_posix())
        return sorted(found)

    def input_files(self, extensions: set[str]) -> list[str]:
        if not self.input.is_dir():
            return []
        return sorted(
            f.name for f in self.input.iterdir() if f.is_file() and f.suffix.lower() in extensions
        )

    def input_folders(self) -> list[str]:
        if not self.input.is_dir():
            return []
        return sorted(f.name for f in self.input.iterdir() if f.is_dir() and f.name != "clipspace")


def model_folder(class_type: str, input_name: str, spec: list) -> str | None:
    """The models/ folder a picker lists, or None when the input is not a model picker."""
    if (class_type, input_name) in _UNTOLD_FOLDERS:
        return _UNTOLD_FOLDERS[(class_type, input_name)]
    if not (isinstance(spec, list) and spec and isinstance(spec[0], list)):
        return None
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    found = _TOOLTIP_FOLDER.search(str(extra.get("tooltip", "")))
    if found:
        return found.group(1)
    if class_type.startswith("WanVideoLoraSelectMulti") and input_name.startswith("lora_"):
        return "loras"
    return None


class Schema:
    def __init__(self, object_info_file: Path, dirs: Dirs):
        raw = json.loads(Path(object_info_file).read_text())
        self._static: dict[str, dict] = {k: v for k, v in raw.items() if k != "_meta"}
        self.dirs = dirs

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._static

    def is_output(self, class_type: str) -> bool:
        return bool(self._static[class_type].get("output_node"))

    def return_types(self, class_type: str) -> list:
        return self._static[class_type]["output"]

    def output_names(self, class_type: str) -> list[str]:
        return self._static[class_type].get("output_name") or self.return_types(class_type)

    def has_hidden_unique_id(self, class_type: str) -> bool:
        return "UNIQUE_ID" in self._static[class_type]["input"].get("hidden", {}).values()

    def info(self, class_type: str) -> dict:
        """The class's object_info entry as this machine would report it now."""
        info = copy.deepcopy(self._static[class_type])
        for category in ("required", "optional"):
            for name, spec in info["input"].get(category, {}).items():
                self._fill(class_type, name, spec)
        return info

    def all_info(self) -> dict:
        return {c: self.info(c) for c in self._static}

    def _fill(self, class_type: str, name: str, spec: list) -> None:
        folder = model_folder(class_type, name, spec)
        if folder is not None:
            files = self.dirs.model_files(folder)
            spec[0] = (["none"] + files) if spec[0] == ["none"] else files
            return
        if class_type in FILE_CHECKS and FILE_CHECKS[class_type].args[0] == name:
            if class_type == "VHS_LoadImages":
                listing = self.dirs.input_folders()
            elif class_type.startswith("LoadImage"):
                listing = self.dirs.input_files(IMAGE_EXTENSIONS)
            elif "Video" in class_type:
                listing = self.dirs.input_files(VIDEO_EXTENSIONS)
            else:
                listing = self.dirs.input_files(AUDIO_EXTENSIONS | VIDEO_EXTENSIONS)
            if spec[0] == "COMBO":
                spec[1]["options"] = listing
            else:
                spec[0] = listing

    # --- validation (port of ComfyUI's execution.validate_prompt) -----------------------------

    def validate_prompt(self, prompt: dict, partial_targets: list[str] | None = None):
        """(valid, error, good_outputs, node_errors), exactly as ComfyUI returns them."""
        outputs = []
        for x in prompt:
            if "class_type" not in prompt[x]:
                return (False, _error("invalid_prompt",
                                      "Cannot execute because a node is missing the class_type property.",
                                      f"Node ID '#{x}'"), [], {})
            class_type = prompt[x]["class_type"]
            if class_type not in self:
                return (False, _error("invalid_prompt",
                                      f"Cannot execute because node {class_type} does not exist.",
                                      f"Node ID '#{x}'"), [], {})
            if self.is_output(class_type) and (partial_targets is None or x in partial_targets):
                outputs.append(x)
        if not outputs:
            return (False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})

        good_outputs: list[str] = []
        errors: list[tuple[str, list]] = []
        node_errors: dict[str, dict] = {}
        validated: dict[str, tuple] = {}
        infos: dict[str, dict] = {}
        for o in outputs:
            try:
                valid, reasons, _ = self._validate_inputs(prompt, o, validated, infos)
            except Exception as ex:
                valid = False
                reasons = [{
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {"exception_type": _full_type_name(type(ex)),
                                   "traceback": traceback.format_tb(sys.exc_info()[2])},
                }]
                validated[o] = (False, reasons, o)
            if valid is True:
                good_outputs.append(o)
                continue
            errors.append((o, reasons))
            for node_id, result in validated.items():
                if result[0] is not True and len(result[1]) > 0:
                    if node_id not in node_errors:
                        node_errors[node_id] = {"errors": result[1], "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]}
                    node_errors[node_id]["dependent_outputs"].append(o)

        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
            return (False, _error("prompt_outputs_failed_validation",
                                  "Prompt outputs failed validation", details),
                    [], node_errors)
        return (True, None, good_outputs, node_errors)

    def _validate_inputs(self, prompt: dict, unique_id: str, validated: dict, infos: dict):
        if unique_id in validated:
            return validated[unique_id]
        inputs = prompt[unique_id]["inputs"]
        class_type = prompt[unique_id]["class_type"]
        if class_type not in infos:
            infos[class_type] = self.info(class_type)
        class_inputs = infos[class_type]["input"]
        check = FILE_CHECKS.get(class_type)
        check_args = check.args if check else []
        check_kwargs = bool(check and check.has_kwargs)

        errors: list[dict] = []
        valid = True
        order = infos[class_type].get("input_order", {})
        names = list(order.get("required", class_inputs.get("required", {}))) + \
            list(order.get("optional", class_inputs.get("optional", {})))
        for x in names:
            input_type, category, extra = _input_info(class_inputs, x)
            if x not in inputs:
                if category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": f"{x}", "extra_info": {"input_name": x}})
                continue
            val = inputs[x]
            info = [input_type, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append({"type": "bad_linked_input",
                                   "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                   "details": f"{x}",
                                   "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                    continue
                o_id = val[0]
                o_class_type = prompt[o_id]["class_type"]
                received_type = self.return_types(o_class_type)[val[1]]
                if not _types_match(received_type, input_type):
                    errors.append({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                        "extra_info": {"input_name": x, "input_config": info,
                                       "received_type": received_type, "linked_node": val},
                    })
                    continue
                try:
                    r = self._validate_inputs(prompt, o_id, validated, infos)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    validated[o_id] = (False, [{
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {"input_name": x, "input_config": info, "exception_message": str(ex),
                                       "exception_type": _full_type_name(type(ex)),
                                       "traceback": traceback.format_tb(sys.exc_info()[2]),
                                       "linked_node": val},
                    }], o_id)
                    continue
            else:
                try:
                    if isinstance(val, dict) and "__value__" in val:
                        val = val["__value__"]
                        inputs[x] = val
                    converter: Callable | None = {"INT": int, "FLOAT": float, "STRING": str,
                                                  "BOOLEAN": bool}.get(input_type if isinstance(input_type, str) else "")
                    if converter is not None:
                        val = converter(val)
                        inputs[x] = val
                except Exception as ex:
                    errors.append({
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {input_type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val,
                                       "exception_message": str(ex)},
                    })
                    continue
                if x in check_args or check_kwargs:
                    continue
                if "min" in extra and val < extra["min"]:
                    errors.append({"type": "value_smaller_than_min",
                                   "message": "Value {} smaller than min of {}".format(val, extra["min"]),
                                   "details": f"{x}",
                                   "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                    continue
                if "max" in extra and val > extra["max"]:
                    errors.append({"type": "value_bigger_than_max",
                                   "message": "Value {} bigger than max of {}".format(val, extra["max"]),
                                   "details": f"{x}",
                                   "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                    continue
                if isinstance(input_type, list) or input_type == "COMBO":
                    options = extra.get("options", []) if input_type == "COMBO" else input_type
                    if val not in options:
                        config: Any = info
                        listed = str(options)
                        if len(options) > 20:
                            listed, config = f"(list of length {len(options)})", None
                        errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                       "details": f"{x}: '{val}' not in {listed}",
                                       "extra_info": {"input_name": x, "input_config": config,
                                                      "received_value": val}})
                        continue

        if check is not None:
            constants = {k: v for k, v in inputs.items() if not isinstance(v, list)
                         and _input_info(class_inputs, k)[1] is not None
                         and (k in check.args or check.has_kwargs)}
            result = check(self.dirs, constants)
            if result is not True:
                for x in constants:
                    details = f"{x}" if result is False else f"{x} - {result}"
                    errors.append({"type": "custom_validation_failed",
                                   "message": "Custom validation failed for node",
                                   "details": details, "extra_info": {"input_name": x}})

        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        validated[unique_id] = ret
        return ret


def _input_info(class_inputs: dict, name: str) -> tuple[Any, str | None, dict]:
    for category in ("required", "optional", "hidden"):
        spec = class_inputs.get(category, {}).get(name)
        if spec is not None:
            if not isinstance(spec, list):
                return spec, category, {}
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    return None, None, {}


def _types_match(received: Any, wanted: Any) -> bool:
    """comfy_execution.validation.validate_node_input: equal, '*', or overlapping 'A,B' unions."""
    if received == wanted or received == "*" or wanted == "*":
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in wanted.split(",")})


def _error(kind: str, message: str, details: str) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"
