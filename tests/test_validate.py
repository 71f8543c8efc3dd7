"""The workflow validator: clean on the four graphs, and each check fires on a broken copy.

Broken copies are made by editing a copy of workflows/ (graphs, bindings, manifest) in tmp_path
and running the validator as a library and as the command the entrypoint calls. The live checks
run against a small HTTP server on 127.0.0.1 that answers /object_info like ComfyUI.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infinitetalk_worker.errors import ComfyUnavailable
from infinitetalk_worker.models import load_manifest
from infinitetalk_worker.settings import REPO_ROOT, WORKFLOWS_DIR, Settings
from infinitetalk_worker.validate import MODEL_INPUTS, check_live, load_schema, validate_workflows
from infinitetalk_worker.workflows import WORKFLOW_NAMES, node_titled
from tests.conftest import OBJECT_INFO, shared_or_skip


@pytest.fixture(scope="module")
def schema() -> dict:
    shared_or_skip()
    return load_schema(OBJECT_INFO)


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A private copy of workflows/ to break."""
    target = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS_DIR, target, ignore=shutil.ignore_patterns("*.md"))
    return target


def edit_graph(workdir: Path, name: str, change) -> None:
    path = workdir / f"{name}.json"
    prompt = json.loads(path.read_text())
    change(prompt)
    path.write_text(json.dumps(prompt))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def node(prompt: dict, title: str) -> dict:
    return prompt[node_titled(prompt, title)]


def problems_of(schema, workdir, name="I2V_single", **kwargs):
    return validate_workflows(schema, names=[name], workflows_dir=workdir, **kwargs)


def stored_graph_problems(schema, workdir, name="I2V_single"):
    """Problems of the stored graph alone (its long-form variant repeats most of them)."""
    return [p for p in problems_of(schema, workdir, name) if p.workflow == name]


def kinds(problems) -> set[str]:
    return {p.kind for p in problems}


def test_the_four_graphs_are_valid(schema):
    problems = validate_workflows(schema)
    assert problems == [], "\n".join(map(str, problems))


def test_the_command_passes_on_the_shipped_graphs():
    shared_or_skip()
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker.validate", "--schema", str(OBJECT_INFO)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: I2V_single, I2V_multi, V2V_single, V2V_multi" in done.stdout


def test_the_command_fails_with_one_line_per_problem(schema, workdir):
    edit_graph(workdir, "V2V_multi", lambda p: node(p, "Sampler").update(class_type="WanVideoSamplerXL"))
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker.validate", "--schema", str(OBJECT_INFO),
                           "--workflows-dir", str(workdir)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "V2V_multi: node 23 'Sampler' (WanVideoSamplerXL): node class 'WanVideoSamplerXL' does not exist" \
        in done.stdout
    assert "must not take jobs" in done.stderr


# --- each check, on a broken copy -------------------------------------------------------------

BREAKAGES = {
    "unknown_class": lambda p: node(p, "Resize").update(class_type="ImageResizeKJv9"),
    "missing_input": lambda p: node(p, "Sampler")["inputs"].pop("scheduler"),
    "unknown_input": lambda p: node(p, "Sampler")["inputs"].update(sigma_shift=3.0),
    "bad_link": lambda p: node(p, "Sampler")["inputs"].update(model=["999", 0]),
    "link_type": lambda p: node(p, "Sampler")["inputs"].update(model=[node_titled(p, "VAE"), 0]),
    "out_of_range": lambda p: node(p, "InfiniteTalk embeds")["inputs"].update(width=4096),
    "not_in_choices": lambda p: node(p, "Sampler")["inputs"].update(scheduler="karras"),
    "wrong_type": lambda p: node(p, "Sampler")["inputs"].update(steps="six"),
    "model_not_in_manifest": lambda p: node(p, "VAE")["inputs"].update(model_name="Wan2_2_VAE_bf16.safetensors"),
    "title": lambda p: node(p, "VAE")["_meta"].update(title="Resize"),
}


@pytest.mark.parametrize("kind", BREAKAGES)
def test_each_check_fires(kind, schema, workdir):
    edit_graph(workdir, "I2V_single", BREAKAGES[kind])
    problems = problems_of(schema, workdir)
    assert kind in kinds(problems), "\n".join(map(str, problems))


def test_a_link_to_an_output_the_node_does_not_have(schema, workdir):
    edit_graph(workdir, "I2V_single",
               lambda p: node(p, "Sampler")["inputs"].update(image_embeds=[node_titled(p, "InfiniteTalk embeds"), 5]))
    [problem] = [p for p in stored_graph_problems(schema, workdir) if p.kind == "bad_link"]
    assert problem.input == "image_embeds" and "has 2 outputs" in problem.message


def test_ranges_are_checked_on_literal_values_only_like_comfyui(schema, workdir):
    """A linked INT is only type-checked (ComfyUI's validate_inputs): 15000 frames may reach
    MultiTalkWav2VecEmbeds.num_frames (max 10000) through an INTConstant, not as a literal."""
    assert schema["MultiTalkWav2VecEmbeds"]["input"]["required"]["num_frames"][1]["max"] == 10000
    edit_graph(workdir, "I2V_single", lambda p: node(p, "Frame count")["inputs"].update(value=15000))
    assert stored_graph_problems(schema, workdir) == []
    edit_graph(workdir, "I2V_single", lambda p: node(p, "Audio embeds")["inputs"].update(num_frames=15000))
    problems = stored_graph_problems(schema, workdir)
    assert [(p.kind, p.title, p.input) for p in problems] == [
        ("out_of_range", "Audio embeds", "num_frames"),
        ("dead_node", "Frame count", None),      # the constant no longer feeds anything
    ]
    assert "15000 is above the maximum 10000" in str(problems[0])


def test_a_linked_input_is_checked_for_its_type(schema, workdir):
    edit_graph(workdir, "I2V_single",
               lambda p: node(p, "Audio embeds")["inputs"].update(num_frames=[node_titled(p, "Resize"), 0]))
    [problem] = [p for p in stored_graph_problems(schema, workdir) if p.kind != "dead_node"]
    assert (problem.kind, problem.input) == ("link_type", "num_frames")
    assert "is IMAGE, the input takes INT" in problem.message


def test_values_below_the_minimum_are_reported(schema, workdir):
    edit_graph(workdir, "I2V_single", lambda p: node(p, "Sampler")["inputs"].update(steps=0))
    [problem] = stored_graph_problems(schema, workdir)
    assert (problem.kind, problem.input) == ("out_of_range", "steps")
    assert "below the minimum 1" in str(problem)


def test_format_widgets_of_the_video_output_are_checked(schema, workdir):
    edit_graph(workdir, "I2V_single", lambda p: node(p, "Video output")["inputs"].update(pix_fmt="rgb48"))
    [problem] = stored_graph_problems(schema, workdir)
    assert (problem.kind, problem.input) == ("not_in_choices", "pix_fmt")


def test_a_second_output_node_is_reported(schema, workdir):
    def add_preview(p):
        p["900"] = {"class_type": "PreviewAny", "inputs": {"source": [node_titled(p, "Audio embeds"), 2]},
                    "_meta": {"title": "Frame count preview"}}
    edit_graph(workdir, "I2V_single", add_preview)
    assert "output_count" in kinds(problems_of(schema, workdir))


def test_a_node_that_feeds_nothing_is_reported(schema, workdir):
    def add_dead(p):
        p["901"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"},
                    "_meta": {"title": "Spare CLIP vision"}}
    edit_graph(workdir, "I2V_single", add_dead)
    [problem] = stored_graph_problems(schema, workdir)
    assert (problem.kind, problem.title) == ("dead_node", "Spare CLIP vision")


def test_a_binding_to_a_renamed_node_is_reported(schema, workdir):
    edit_graph(workdir, "V2V_single", lambda p: node(p, "Text encoder")["_meta"].update(title="T5 encoder"))
    problems = problems_of(schema, workdir, name="V2V_single")
    messages = [str(p) for p in problems if p.kind == "binding"]
    assert any("parameter 'prompt'" in m and "'Text encoder'" in m for m in messages), messages


def test_a_binding_to_a_missing_input_is_reported(schema, workdir):
    edit_json(workdir / "bindings.json",
              lambda b: b["parameters"]["seed"].update(targets=[["Sampler", "noise_seed"]]))
    messages = [str(p) for p in problems_of(schema, workdir) if p.kind == "binding"]
    assert any("parameter 'seed'" in m and "no input 'noise_seed'" in m for m in messages), messages


def test_a_mapped_binding_value_outside_the_range_is_reported(schema, workdir):
    def bad_map(b):
        b["parameters"]["force_offload"]["targets"][2][2]["true"] = 99
    edit_json(workdir / "bindings.json", bad_map)
    problems = problems_of(schema, workdir)
    assert any(p.kind == "out_of_range" and p.input == "blocks_to_swap" for p in problems), problems


def test_an_unbound_media_loader_is_reported(schema, workdir):
    edit_json(workdir / "bindings.json", lambda b: b["parameters"].pop("mux_audio"))
    [problem] = problems_of(schema, workdir)
    assert (problem.kind, problem.title) == ("unbound_media", "Mux audio")


def test_a_wrong_output_binding_is_reported(schema, workdir):
    edit_json(workdir / "bindings.json", lambda b: b.update(output="Sampler"))
    assert any("not an output node" in str(p) for p in problems_of(schema, workdir))


def test_a_broken_long_form_variant_is_reported(schema, workdir):
    edit_json(workdir / "bindings.json", lambda b: b["longform"]["output"]["inputs"].update(source=["Decoded frames", 7]))
    problems = problems_of(schema, workdir)
    assert [p.workflow for p in problems] == ["I2V_single (long-form)"]
    assert problems[0].kind == "bad_link"


def test_a_model_dropped_from_the_manifest_is_reported(schema, workdir):
    edit_json(workdir / "models.json",
              lambda m: m.update(models=[e for e in m["models"] if e["file"] != "pytorch_model.bin"
                                         and e["file"] != "config.json" and e["file"] != "preprocessor_config.json"]))
    problems = problems_of(schema, workdir, name="I2V_multi")
    assert {(p.kind, p.title) for p in problems} == {("model_not_in_manifest", "Wav2vec model")}


# --- live ComfyUI -----------------------------------------------------------------------------

def live_schema(schema: dict) -> dict:
    """The lab schema as a provisioned server reports it: pickers list the manifest's files."""
    served = copy.deepcopy(schema)
    files = sorted({m.name for m in load_manifest() if m.name})
    for class_type, input_name in MODEL_INPUTS:
        spec = served[class_type]["input"]["required"][input_name]
        if spec[0] == []:
            spec[0] = files
    return served


@pytest.fixture
def comfy_schema_server():
    """Serves a given schema at /object_info on 127.0.0.1 (ephemeral port)."""
    state = {"schema": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path != "/object_info":
                self.send_error(404)
                return
            body = json.dumps(state["schema"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(schema: dict) -> str:
        state["schema"] = schema
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    server.shutdown()
    server.server_close()


def test_live_check_passes_on_a_provisioned_server(schema, comfy_schema_server):
    url = comfy_schema_server(live_schema(schema))
    assert check_live(Settings(comfy_url=url)) == []


def test_live_check_reports_a_model_the_server_does_not_have(schema, comfy_schema_server):
    served = live_schema(schema)
    served["WanVideoVAELoader"]["input"]["required"]["model_name"][0] = ["Wan2_1_VAE_fp32.safetensors"]
    problems = check_live(Settings(comfy_url=comfy_schema_server(served)))
    assert {(p.kind, p.title) for p in problems} == {("model_not_on_server", "VAE")}
    assert len(problems) == 2 * len(WORKFLOW_NAMES)    # each graph and its long-form variant
    assert "is the model volume mounted" in str(problems[0])


def test_live_check_rejects_an_attention_backend_the_server_lacks(schema, comfy_schema_server):
    url = comfy_schema_server(live_schema(schema))
    problems = check_live(Settings(comfy_url=url, attention_mode="sageattn_9"))
    assert problems and {(p.kind, p.input) for p in problems} == {("not_in_choices", "attention_mode")}


def test_live_check_says_when_comfyui_does_not_answer(comfy_schema_server):
    url = comfy_schema_server({})
    with pytest.raises(ComfyUnavailable, match="could not read the node schemas"):
        check_live(Settings(comfy_url=url + "/nowhere"))


def test_the_live_command_refuses_a_broken_server(schema, comfy_schema_server):
    served = live_schema(schema)
    del served["MultiTalkWav2VecEmbeds"]
    env = {**os.environ, "COMFY_URL": comfy_schema_server(served)}
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker.validate", "--live"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "node class 'MultiTalkWav2VecEmbeds' does not exist" in done.stdout


def test_the_live_command_exits_2_when_comfyui_is_down(comfy_schema_server):
    env = {**os.environ, "COMFY_URL": comfy_schema_server({}) + "/down"}
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker.validate", "--live"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot read node schemas" in done.stderr
