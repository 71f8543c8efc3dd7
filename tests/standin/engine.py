"""Running a validated prompt the way ComfyUI's PromptExecutor does.

Order: comfy_execution.graph.ExecutionList (outputs added in turn, dependencies pushed on a
stack, ready nodes picked by ux_friendly_pick_node). Cache: the classic cache, keyed by an
input signature (class, IS_CHANGED of file loaders, constant inputs, ancestors' signatures) and
trimmed to the current prompt, so an identical prompt runs nothing and a prompt that differs in
one node re-runs that node and what depends on it. Messages: the same events, in the same
order, with the same fields as the recorded transcripts.

Behaviour switches (failures on demand) are applied here: see `Behaviour`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import nodes
from .nodes import Interrupted, NodeFailure
from .schema import FILE_CHECKS, Dirs, Schema

LOOPING_SAMPLERS = {"WanVideoSampler"}
Send = Callable[[str, Any, str | None], None]


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


@dataclass
class Behaviour:
    """Failures and pacing on demand (CLI --behaviour JSON or POST /_standin/behaviour).

    fail: "exec_error" | "oom" | "hang" | "die" | "ws_drop", raised in the node of class
    `node_type` (default WanVideoSampler); for the sampler at the start of window `at_window`
    (default 1), for other classes when the node starts. `times` limits how many runs it hits
    (default: every run). `step_delay_s` paces each sampling step; `slow_nodes` maps a class to
    seconds it takes (not interruptible, like a real CPU node); `startup_delay_s` is read by the
    server at start.
    """
    raw: dict

    @property
    def fail(self) -> str | None:
        return self.raw.get("fail")

    @property
    def node_type(self) -> str:
        return self.raw.get("node_type") or "WanVideoSampler"

    @property
    def at_window(self) -> int:
        return int(self.raw.get("at_window") or 1)

    @property
    def step_delay_s(self) -> float:
        return float(self.raw.get("step_delay_s", 0.01))

    def slow(self, class_type: str) -> float:
        return float((self.raw.get("slow_nodes") or {}).get(class_type, 0.0))

    def consume(self) -> None:
        if "times" in self.raw:
            self.raw["times"] = int(self.raw["times"]) - 1
            if self.raw["times"] <= 0:
                for key in ("fail", "times", "node_type", "at_window", "exception_type", "exception_message"):
                    self.raw.pop(key, None)


class Progress:
    """comfy_execution.progress: per-node state, broadcast as `progress_state` on every change."""

    def __init__(self, prompt_id: str, send: Send):
        self.prompt_id = prompt_id
        self.send = send
        self.nodes: dict[str, dict] = {}

    def _entry(self, node_id: str) -> dict:
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _broadcast(self) -> None:
        active = {
            node_id: {"value": s["value"], "max": s["max"], "state": s["state"], "node_id": node_id,
                      "prompt_id": self.prompt_id, "display_node_id": node_id, "parent_node_id": None,
                      "real_node_id": node_id}
            for node_id, s in self.nodes.items() if s["state"] != "pending"
        }
        self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": active}, None)

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._broadcast()

    def update(self, node_id: str, value: float, total: float) -> None:
        self._entry(node_id).update(state="running", value=value, max=total)
        self._broadcast()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._broadcast()


class ExecutionList:
    """comfy_execution.graph.ExecutionList, without lazy inputs and subgraphs."""

    def __init__(self, prompt: dict, is_cached: Callable[[str], bool], is_output: Callable[[str], bool]):
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict]] = {}

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], value[1], unique_id))
        for from_id, socket, to_id in links:
            if not self.is_cached(from_id):
                self.add_node(from_id)
                if to_id not in self.blocking[from_id]:
                    self.blocking[from_id][to_id] = {}
                    self.block_count[to_id] += 1
                self.blocking[from_id][to_id][socket] = True

    def is_empty(self) -> bool:
        return not self.pending

    def stage(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        for n in ready:
            if self.is_output(n):
                return n
        for n in ready:
            if any(self.is_output(b) for b in self.blocking[n]):
                return n
        for n in ready:
            if any(self.is_output(b2) for b in self.blocking[n] for b2 in self.blocking[b]):
                return n
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


class NodeContext:
    """What `nodes` handlers see of the running prompt."""

    def __init__(self, executor: "Executor", node_id: str, class_type: str):
        self.executor = executor
        self.node_id = node_id
        self.class_type = class_type
        self.dirs = executor.dirs
        self.step_delay_s = executor.behaviour.step_delay_s

    def progress(self, value: int, total: int) -> None:
        # ComfyUI's progress hook checks for an interrupt first: a sampler stops at its next step.
        self.executor.check_interrupt()
        ex = self.executor
        ex.progress.update(self.node_id, value, total)
        ex.send("progress", {"value": value, "max": total, "prompt_id": ex.prompt_id,
                             "node": self.node_id}, ex.client_id)

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            self.executor.interrupt.wait(seconds)

    def trigger(self, window: int | None) -> None:
        self.executor.trigger(self.class_type, window)

    def send_text(self, text: str) -> None:
        node = self.node_id.encode()
        self.executor.send_binary(3, len(node).to_bytes(4, "big") + node + text.encode())

    def scratch(self, name: str) -> Path:
        folder = self.executor.scratch / f"{self.executor.prompt_id}-{self.node_id}-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class Executor:
    def __init__(self, schema: Schema, dirs: Dirs, scratch: Path, behaviour: Behaviour,
                 send: Send, send_binary: Callable[[int, bytes], None], drop_sockets: Callable[[], None]):
        self.schema = schema
        self.dirs = dirs
        self.scratch = scratch
        self.behaviour = behaviour
        self.send_message = send
        self.send_binary = send_binary
        self.drop_sockets = drop_sockets
        self.interrupt = threading.Event()
        self.outputs: dict[str, tuple] = {}     # signature -> node outputs
        self.ui: dict[str, dict] = {}           # signature -> {"meta", "output"}
        self.client_id: str | None = None
        self.prompt_id = ""
        self.last_node_id: str | None = None
        self.status_messages: list = []
        self.history_result: dict = {}
        self.success = True
        self.progress = Progress("", send)

    def send(self, event: str, data: Any, sid: str | None) -> None:
        self.send_message(event, data, sid)

    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.status_messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.send(event, data, self.client_id)

    def check_interrupt(self) -> None:
        if self.interrupt.is_set():
            raise Interrupted()

    # --- behaviour switches -----------------------------------------------------------------------

    def trigger(self, class_type: str, window: int | None) -> None:
        b = self.behaviour
        if not b.fail or class_type != b.node_type:
            return
        if window is not None and window != b.at_window:
            return
        fail, raw = b.fail, dict(b.raw)
        b.consume()
        if fail == "oom":
            raise nodes.oom_failure()
        if fail == "exec_error":
            raise self._failure_for(class_type, raw)
        if fail == "hang":
            self.interrupt.wait()
            raise Interrupted()
        if fail == "die":
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if fail == "ws_drop":
            self.drop_sockets()

    @staticmethod
    def _failure_for(class_type: str, raw: dict) -> NodeFailure:
        if "exception_message" in raw or "exception_type" in raw:
            return NodeFailure(raw.get("exception_type", "RuntimeError"),
                               raw.get("exception_message", "simulated failure") + "\n",
                               nodes.traceback_for("/ComfyUI/custom_nodes/standin.py", 1, "run", "raise"))
        if class_type == "WanVideoModelLoader":
            return NodeFailure("safetensors._safetensors_rust.SafetensorError",
                               "Error while deserializing header: header too small\n", nodes.traceback_for(
                                   "/ComfyUI/comfy/utils.py", 64, "load_torch_file",
                                   'with safetensors.safe_open(ckpt, framework="pt", device=device.type) as f:'))
        return NodeFailure("RuntimeError", f"{class_type} failed (stand-in exec_error behaviour)\n",
                           nodes.traceback_for("/ComfyUI/custom_nodes/standin.py", 1, "run", "raise"))

    # --- signatures (the cache key) -------------------------------------------------------------

    def _signatures(self, prompt: dict) -> dict[str, str]:
        sigs: dict[str, str] = {}

        def sig(node_id: str) -> str:
            if node_id not in sigs:
                node = prompt[node_id]
                class_type = node["class_type"]
                parts: list[Any] = [class_type, self._is_changed(node)]
                if self.schema.has_hidden_unique_id(class_type):
                    parts.append(node_id)
                for key in sorted(node["inputs"]):
                    value = node["inputs"][key]
                    parts.append([key, ["LINK", sig(value[0]), value[1]] if is_link(value) else value])
                sigs[node_id] = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
            return sigs[node_id]

        for node_id in prompt:
            sig(node_id)
        return sigs

    def _is_changed(self, node: dict) -> str | bool:
        """IS_CHANGED of the file loaders: the file's hash (NaN, i.e. never equal, when unreadable)."""
        check = FILE_CHECKS.get(node["class_type"])
        if check is None:
            return False
        name = node["inputs"].get(check.args[0])
        path = self.dirs.annotated(str(name))
        try:
            if path.is_dir():
                return json.dumps(sorted((f.name, f.stat().st_mtime_ns) for f in path.iterdir()))
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return uuid.uuid4().hex

    # --- one prompt -------------------------------------------------------------------------------

    def execute(self, prompt: dict, prompt_id: str, extra_data: dict, execute_outputs: list[str]) -> None:
        self.interrupt.clear()
        prompt = copy.deepcopy(prompt)
        self.client_id = extra_data.get("client_id")
        self.prompt_id = prompt_id
        self.status_messages = []
        self.history_result = {"outputs": {}, "meta": {}}
        self.success = True
        self.add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)

        sigs = self._signatures(prompt)
        used = set(sigs.values())
        self.outputs = {k: v for k, v in self.outputs.items() if k in used}
        self.ui = {k: v for k, v in self.ui.items() if k in used}
        self.progress = Progress(prompt_id, self.send)
        cached = [n for n in prompt if sigs[n] in self.outputs]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, broadcast=False)

        executed: list[str] = []
        current_outputs = list(reversed(list(prompt)))
        order = ExecutionList(prompt, lambda n: sigs[n] in self.outputs,
                              lambda n: self.schema.is_output(prompt[n]["class_type"]))
        for node_id in execute_outputs:
            order.add_node(node_id)
        while not order.is_empty():
            node_id = order.stage()
            failure = self._run_node(prompt, node_id, sigs, executed)
            if failure is not None:
                self._report_failure(prompt, node_id, failure, executed, current_outputs)
                break
            order.complete(node_id)
        else:
            self.add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)
            for node_id in prompt:
                entry = self.ui.get(sigs[node_id])
                if entry is not None:
                    self.history_result["outputs"][node_id] = entry["output"]
                    self.history_result["meta"][node_id] = entry["meta"]
        self.last_node_id = None

    def _run_node(self, prompt: dict, node_id: str, sigs: dict, executed: list[str]):
        """None on success, else (exception, formatted inputs)."""
        node = prompt[node_id]
        class_type = node["class_type"]
        sig = sigs[node_id]
        if sig in self.outputs:
            if self.client_id is not None:
                cached_ui = self.ui.get(sig) or {}
                self.send("executed", {"node": node_id, "display_node": node_id,
                                       "output": cached_ui.get("output"), "prompt_id": self.prompt_id},
                          self.client_id)
            self.progress.finish(node_id)
            return None

        self.progress.start(node_id)
        values: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            values[name] = self.outputs[sigs[value[0]]][value[1]] if is_link(value) else value
        if self.client_id is not None:
            self.last_node_id = node_id
            self.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                      self.client_id)
        ctx = NodeContext(self, node_id, class_type)
        try:
            self.check_interrupt()
            if self.behaviour.slow(class_type):
                time.sleep(self.behaviour.slow(class_type))
            if class_type not in LOOPING_SAMPLERS:
                self.trigger(class_type, None)
            spec_inputs = {**self.schema.info(class_type)["input"].get("required", {}),
                           **self.schema.info(class_type)["input"].get("optional", {})}
            nodes.check_model_files(ctx, spec_inputs, class_type, values)
            handler = nodes.HANDLERS.get(class_type)
            if handler is not None:
                result = handler(ctx, **values)
            else:
                result = nodes.passthrough(ctx, self.schema.return_types(class_type),
                                           self.schema.output_names(class_type), values)
        except Interrupted as ex:
            return ex, {}
        except Exception as ex:
            return ex, {k: [v if v is None or isinstance(v, (int, float, bool, str)) else str(v)]
                        for k, v in values.items()}
        ui, outputs = (result.get("ui"), result.get("result", ())) if isinstance(result, dict) else (None, result)
        if ui:
            self.ui[sig] = {"meta": {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                     "real_node_id": node_id}, "output": ui}
            if self.client_id is not None:
                self.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                       "prompt_id": self.prompt_id}, self.client_id)
        self.outputs[sig] = tuple(outputs)
        self.progress.finish(node_id)
        executed.append(node_id)
        return None

    def _report_failure(self, prompt: dict, node_id: str, failure: tuple, executed: list[str],
                        current_outputs: list[str]) -> None:
        ex, inputs = failure
        self.success = False
        base = {"prompt_id": self.prompt_id, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                "executed": list(executed)}
        if isinstance(ex, Interrupted):
            self.add_message("execution_interrupted", base, broadcast=True)
            return
        if isinstance(ex, NodeFailure):
            kind, message, frames = ex.exception_type, ex.message, ex.traceback
        else:
            module = type(ex).__module__
            kind = type(ex).__qualname__ if module == "builtins" else f"{module}.{type(ex).__qualname__}"
            message, frames = f"{ex}\n", traceback.format_tb(ex.__traceback__)
        self.add_message("execution_error", {**base, "exception_message": message, "exception_type": kind,
                                             "traceback": frames, "current_inputs": inputs,
                                             "current_outputs": current_outputs}, broadcast=False)
