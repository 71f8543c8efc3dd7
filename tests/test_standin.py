"""The ComfyUI stand-in behaves like the recorded ComfyUI.

Each transcript of ../shared/comfyui/transcripts is replayed against a fresh stand-in (same
requests, same client id, real media where the recording uploaded files) and every response
and websocket message is compared with the recording: same status codes, keys, error types and
messages, node ids and message order; ids, timestamps and machine paths are matched loosely.
Then an InfiniteTalk-shaped graph built from the node schemas runs through it: a decodable MP4
with the graph's size and audio, long-form frames window by window, the node cache, and each
behaviour switch.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import websocket

from tests.conftest import COMFY_SHARED, TRANSCRIPTS
from tests.mediagen import portrait, probe, speech, video

FULL_OBJECT_INFO = COMFY_SHARED / "object_info.json"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Values that differ between any two runs of a real ComfyUI.
LOOSE_KEYS = {"timestamp", "create_time", "number", "sid", "traceback", "current_outputs",
              "python_version", "argv", "ram_total", "ram_free", "devices", "pytorch_version"}


class WsClient:
    """A websocket client that records every message, text or binary, in arrival order."""

    def __init__(self, url: str, client_id: str):
        self.ws = websocket.create_connection(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}",
                                              timeout=30)
        self.messages: list[dict] = []
        self.closed = False
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    message = {"type": "binary", "first8_hex": data[:8].hex(), "length": len(data)}
                else:
                    message = json.loads(data)
                with self.cond:
                    self.messages.append(message)
                    self.cond.notify_all()
        except (websocket.WebSocketException, OSError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.messages) or self.closed, timeout):
                raise AssertionError(f"timed out; got {[m['type'] for m in self.messages]}")
            return list(self.messages)

    def wait_done(self, prompt_id: str, timeout: float = 60) -> list[dict]:
        """Messages up to the `executing` with node null that ends `prompt_id`."""
        return self.wait_for(lambda ms: any(_is_end(m, prompt_id) for m in ms), timeout)

    def wait_closed(self, timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.closed, timeout), "websocket still open"

    def close(self) -> None:
        self.ws.close()


def _is_end(message: dict, prompt_id: str | None = None) -> bool:
    data = message.get("data", {})
    return (message["type"] == "executing" and data.get("node") is None
            and (prompt_id is None or data.get("prompt_id") == prompt_id))


def normalise(value: Any, ids: dict[str, str], loose: frozenset[str] = frozenset()) -> Any:
    """Recorded or live value with ids mapped, machine paths and volatile numbers blanked."""
    if isinstance(value, dict):
        return {ids.get(k, k): ("<loose>" if k in LOOSE_KEYS | loose else normalise(v, ids, loose))
                for k, v in value.items()}
    if isinstance(value, list):
        if len(value) == 5 and isinstance(value[1], str) and UUID.fullmatch(value[1]):
            value = ["<queue number>", *value[1:]]     # [number, prompt_id, prompt, extra, outputs]
        return [normalise(v, ids, loose) for v in value]
    if isinstance(value, str):
        value = UUID.sub(lambda m: ids.get(m.group(0), "<id>"), value)
        return re.sub(r"(/[^\s'\"]*)?/(input|output|temp)/", r"<\2>/", value)
    return value


def assert_matches(recorded: Any, live: Any, ids: dict[str, str], where: str,
                   loose: frozenset[str] = frozenset()) -> None:
    assert normalise(live, {v: v for v in ids.values()}, loose) == normalise(recorded, ids, loose), where


def upload_content(name: str, tmp: Path) -> bytes:
    """Real media standing in for the files the recording uploaded."""
    if "corrupt" in name:
        return b"this is not a png file\n"
    if name.endswith(".png"):
        return portrait(tmp / name, 96, 80).read_bytes()
    if name.endswith(".wav"):
        return speech(tmp / name, "Hello from the recording.", seconds=2.0).read_bytes()
    raise AssertionError(f"no media for {name}")


def replay(standin, transcript: dict, tmp: Path, timing: bool = False) -> dict[str, str]:
    """Send the recorded requests in order, comparing each response and then the websocket.

    timing: the recording raced an interrupt against running nodes; where it landed (which node,
    what had run) and the messages in between are compared loosely.
    """
    loose = frozenset({"node_id", "node_type", "executed"}) if timing else frozenset()
    events = transcript["events"]
    ids: dict[str, str] = {}
    ws: WsClient | None = None
    pending: dict | None = None
    recorded_ws = [e for e in events if e["dir"] == "ws_recv"]
    for event in events:
        kind = event["dir"]
        if kind == "ws_connect":
            ws = WsClient(standin.url, transcript["client_id"])
        elif kind == "http_request":
            before = [e for e in recorded_ws if e["seq"] < event["seq"] and "message" in e]
            if ws is not None:
                # Wait for what the recording had received by then (runs end, interrupts land).
                for key in ("execution_start", "execution_interrupted"):
                    n = sum(e["message"]["type"] == key for e in before)
                    ws.wait_for(lambda ms, key=key, n=n: sum(m["type"] == key for m in ms) >= n)
                ends = sum(_is_end(e["message"]) for e in before)
                ws.wait_for(lambda ms: sum(_is_end(m) for m in ms) >= ends)
            pending = event
            response = _send(standin.url, event, ids, tmp)
        elif kind == "http_response":
            where = f"{transcript['name']} seq {event['seq']} {event['method']} {event['path']}"
            assert response.status_code == event["status"], where
            if "body" in event:
                body = response.json()
                if pending["path"] == "/prompt" and pending["method"] == "POST" and "prompt_id" in event["body"]:
                    ids[event["body"]["prompt_id"]] = body["prompt_id"]
                if pending["path"] == "/system_stats":
                    assert _keys(body) == _keys(event["body"]), where
                else:
                    assert_matches(event["body"], body, ids, where, loose)
            elif event.get("content_type"):
                assert response.headers["Content-Type"].startswith(event["content_type"]), where
                assert response.content[:8].hex() == event["first8_hex"], where
        elif kind == "ws_close_by_client" and ws is not None:
            live = ws.messages
            ws.close()
            expected = [e["message"] if "message" in e else
                        {"type": "binary", "first8_hex": e["first8_hex"], "length": "<loose>"}
                        for e in recorded_ws]
            got = [m if m["type"] != "binary" else {**m, "length": "<loose>"} for m in live]
            if timing:
                expected, got = _milestones(expected), _milestones(got)
            assert [m["type"] for m in got] == [m["type"] for m in expected], transcript["name"]
            for i, (e, g) in enumerate(zip(expected, got)):
                assert_matches(e, g, ids, f"{transcript['name']} ws message {i} ({e['type']})", loose)
    return ids


def _milestones(messages: list[dict]) -> list[dict]:
    keep = {"execution_start", "execution_cached", "execution_success", "execution_error",
            "execution_interrupted"}
    return [{"type": m["type"]} for m in messages if m["type"] in keep or _is_end(m)]


def _keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value[:1]]
    return "number" if value is None or isinstance(value, (int, float)) else type(value).__name__


def _send(url: str, event: dict, ids: dict[str, str], tmp: Path) -> requests.Response:
    path = UUID.sub(lambda m: ids.get(m.group(0), m.group(0)), event["path"])
    kind = event.get("body_kind")
    if kind == "multipart":
        files = {k: (f["filename"], upload_content(f["filename"], tmp), f["content_type"])
                 for k, f in event["body"]["files"].items()}
        return requests.post(url + path, data=event["body"]["fields"], files=files, timeout=30)
    if kind == "json":
        body = json.loads(UUID.sub(lambda m: ids.get(m.group(0), m.group(0)), json.dumps(event["body"])))
        return requests.request(event["method"], url + path, json=body, timeout=30)
    return requests.request(event["method"], url + path, params=event.get("query"), timeout=30)


def load_transcript(name: str) -> dict:
    return json.loads((TRANSCRIPTS / f"{name}.json").read_text())


# --- the recordings, replayed ---------------------------------------------------------------------

def test_replayed_transcripts_match_the_recordings(comfy_standin, tmp_path):
    # One server for all, as in the lab: e first (it reads an empty history), then in recording order.
    standin = comfy_standin(object_info=FULL_OBJECT_INFO, models=False)
    # The lab machine had this zero-byte file in models/diffusion_models when it recorded b and c1.
    (standin.models_dir / "diffusion_models").mkdir(parents=True, exist_ok=True)
    (standin.models_dir / "diffusion_models" / "lab_placeholder_zero_bytes.safetensors").write_bytes(b"")
    for name in ["e_queue_system_stats_prompt", "a1_success_image", "a2_success_video_vhs",
                 "b_validation_errors", "c1_execution_error_wanvideo_loader",
                 "c2_execution_error_corrupt_image"]:
        replay(standin, load_transcript(name), tmp_path)


def test_interrupt_and_queue_race_match_the_recording(comfy_standin, tmp_path):
    # Each ImageBlur takes a while and cannot be stopped half-way, as on the lab's CPU.
    standin = comfy_standin({"slow_nodes": {"ImageBlur": 0.3}}, object_info=FULL_OBJECT_INFO)
    transcript = load_transcript("d_interrupt")
    ids = replay(standin, transcript, tmp_path, timing=True)
    first = ids[transcript["prompt_1_id"]]
    history = requests.get(f"{standin.url}/history/{first}", timeout=10).json()[first]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    last_event, last = history["status"]["messages"][-1]
    assert last_event == "execution_interrupted" and last["node_type"] == "ImageBlur"
    assert history["outputs"] == {}


# --- an InfiniteTalk-shaped graph ---------------------------------------------------------------------

MODELS = {"multitalk": ("diffusion_models", "infinitetalk_single.safetensors"),
          "video": ("diffusion_models", "wan_i2v_14b.safetensors"),
          "vae": ("vae", "wan_vae.safetensors"),
          "t5": ("text_encoders", "umt5.safetensors")}


def infinitetalk_graph(image: str, audio: str, *, size: int = 64, frames: int = 1000, steps: int = 3,
                       output_path: str = "", prefix: str = "rp-test/infinitetalk") -> dict:
    """Wired like kijai's I2V InfiniteTalk example, with the inputs the schemas require."""
    graph = {
        "1": {"class_type": "MultiTalkModelLoader", "inputs": {"model": MODELS["multitalk"][1]}},
        "2": {"class_type": "WanVideoModelLoader", "inputs": {
            "model": MODELS["video"][1], "base_precision": "bf16", "quantization": "disabled",
            "load_device": "offload_device", "attention_mode": "sdpa", "multitalk_model": ["1", 0]}},
        "3": {"class_type": "WanVideoVAELoader", "inputs": {"model_name": MODELS["vae"][1], "precision": "bf16"}},
        "4": {"class_type": "WanVideoTextEncodeCached", "inputs": {
            "model_name": MODELS["t5"][1], "precision": "bf16", "positive_prompt": "a person talking",
            "negative_prompt": "", "quantization": "disabled", "use_disk_cache": False, "device": "gpu"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": image}},
        "6": {"class_type": "ImageResizeKJv2", "inputs": {
            "image": ["5", 0], "width": size, "height": size, "upscale_method": "lanczos",
            "keep_proportion": "crop", "pad_color": "0, 0, 0", "crop_position": "center", "divisible_by": 16}},
        "7": {"class_type": "WanVideoImageToVideoMultiTalk", "inputs": {
            "vae": ["3", 0], "width": ["6", 1], "height": ["6", 2], "frame_window_size": 81,
            "motion_frame": 9, "force_offload": True, "colormatch": "disabled", "start_image": ["6", 0],
            "mode": "infinitetalk", "output_path": output_path}},
        "8": {"class_type": "DownloadAndLoadWav2VecModel", "inputs": {
            "model": "TencentGameMate/chinese-wav2vec2-base", "base_precision": "fp16", "load_device": "main_device"}},
        "9": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
        "10": {"class_type": "MultiTalkWav2VecEmbeds", "inputs": {
            "wav2vec_model": ["8", 0], "audio_1": ["9", 0], "normalize_loudness": True, "num_frames": frames,
            "fps": 25.0, "audio_scale": 1.0, "audio_cfg_scale": 1.0, "multi_audio_type": "para"}},
        "11": {"class_type": "WanVideoSampler", "inputs": {
            "model": ["2", 0], "image_embeds": ["7", 0], "steps": steps, "cfg": 1.0, "shift": 11.0, "seed": 1,
            "force_offload": True, "scheduler": "dpm++_sde", "riflex_freq_index": 0, "text_embeds": ["4", 0],
            "multitalk_embeds": ["10", 0]}},
        "12": {"class_type": "WanVideoPassImagesFromSamples", "inputs": {"samples": ["11", 0]}},
    }
    if output_path:
        graph["13"] = {"class_type": "PreviewAny", "inputs": {"source": ["12", 1]}}
    else:
        graph["13"] = {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["12", 0], "audio": ["9", 0], "frame_rate": 25, "loop_count": 0,
            "filename_prefix": prefix, "format": "video/h264-mp4", "pix_fmt": "yuv420p", "crf": 19,
            "save_metadata": True, "trim_to_audio": True, "pingpong": False, "save_output": True}}
    return graph


@pytest.fixture
def talking(comfy_standin, tmp_path):
    """Start a stand-in with the graph's models and media in place: talking(seconds, behaviour)."""
    def start(seconds: float = 4.4, behaviour: dict | None = None):
        standin = comfy_standin(behaviour)
        for folder, name in MODELS.values():
            standin.add_model(folder, name)
        (standin.input_dir / "rp-abc").mkdir()
        portrait(standin.input_dir / "rp-abc" / "face.png", 120, 90)
        speech(standin.input_dir / "rp-abc" / "speech.wav", "Testing the stand-in", seconds=seconds)
        return standin
    return start


def submit(standin, graph: dict, client_id: str = "tester") -> tuple[WsClient, str]:
    ws = WsClient(standin.url, client_id)
    response = requests.post(f"{standin.url}/prompt", json={"prompt": graph, "client_id": client_id}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["node_errors"] == {}
    return ws, response.json()["prompt_id"]


def history(standin, prompt_id: str) -> dict:
    return requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json()[prompt_id]


def test_infinitetalk_graph_writes_a_real_mp4_cut_to_the_audio(talking):
    standin = talking(seconds=4.4)
    ws, prompt_id = submit(standin, infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", steps=3))
    messages = ws.wait_done(prompt_id)
    assert messages[-1] == {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}
    # 110 frames of audio need two windows (81 + 72); ComfyUI's bar counts steps across windows.
    sampler = [m["data"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "11"]
    assert [p["value"] for p in sampler] == [1, 2, 3, 4, 5, 6]
    assert {p["max"] for p in sampler} == {6}

    gifs = history(standin, prompt_id)["outputs"]["13"]["gifs"]
    assert [g["filename"] for g in gifs] == ["infinitetalk_00001-audio.mp4"]
    assert gifs[0]["subfolder"] == "rp-test" and gifs[0]["frame_rate"] == 25.0
    video = standin.output_dir / "rp-test" / "infinitetalk_00001-audio.mp4"
    info = probe(video)
    assert (info["video"]["width"], info["video"]["height"]) == (64, 64)
    assert info["video"]["codec"] == "h264" and info["audio"] is not None
    assert 100 <= info["video"]["frames"] < 110      # trim_to_audio: a few frames short of the audio
    view = requests.get(f"{standin.url}/view", params={"filename": gifs[0]["filename"],
                                                        "subfolder": "rp-test", "type": "output"}, timeout=10)
    assert view.status_code == 200 and view.content == video.read_bytes()


def test_video_to_video_graph_moves_with_the_source_clip(talking):
    standin = talking(seconds=2.0)
    video(standin.input_dir / "rp-abc" / "clip.mp4", seconds=1.0, fps=25, width=96, height=64, audio=False)
    graph = infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", steps=1)
    graph["5"] = {"class_type": "VHS_LoadVideo", "inputs": {
        "video": "rp-abc/clip.mp4", "force_rate": 0, "custom_width": 0, "custom_height": 0,
        "frame_load_cap": 81, "skip_first_frames": 0, "select_every_nth": 1, "format": "None"}}
    graph["14"] = {"class_type": "WanVideoEncode", "inputs": {
        "vae": ["3", 0], "image": ["6", 0], "enable_vae_tiling": False, "tile_x": 272, "tile_y": 272,
        "tile_stride_x": 144, "tile_stride_y": 128}}
    graph["11"]["inputs"]["samples"] = ["14", 0]
    ws, prompt_id = submit(standin, graph)
    ws.wait_done(prompt_id)
    assert history(standin, prompt_id)["status"]["status_str"] == "success"
    out = standin.output_dir / "rp-test" / "infinitetalk_00001-audio.mp4"
    info = probe(out)
    assert (info["video"]["width"], info["video"]["height"]) == (64, 64)
    assert 40 <= info["video"]["frames"] < 50                  # 50 frames of audio, trimmed
    # The 25-frame clip loops under the audio: frame 0 and frame 25 match, frame 12 does not.
    frames = [_frame(out, i) for i in (0, 12, 25)]
    assert _differs(frames[0], frames[1]) > 5 * _differs(frames[0], frames[2])


@pytest.mark.parametrize("stored, rotation, custom, fmt, loaded", [
    ((96, 64), 0, (0, 0), "None", (96, 64)),           # the source's own size
    ((96, 64), 0, (48, 0), "None", (48, 32)),          # one side set: aspect ratio kept
    ((96, 64), 0, (0, 40), "None", (60, 40)),
    ((98, 64), 0, (50, 0), "None", (50, 33)),          # 64*50/98 = 32.65, rounded to 1 pixel ...
    ((98, 64), 0, (50, 0), "AnimateDiff", (48, 32)),   # ... or to 8 with a format's dim of 8
    ((96, 64), 0, (64, 64), "None", (64, 64)),         # both set: centre crop to that aspect
    ((96, 64), 90, (32, 0), "None", (32, 48)),         # turned upright before it is sized
])
def test_load_video_sizes_frames_as_videohelpersuite_does(talking, stored, rotation, custom, fmt, loaded):
    """VHS_LoadVideo's target_size: custom_width/custom_height (0 = from the aspect ratio), each
    side rounded to the format's downscale ratio (1 for "None"), frames turned by their display
    matrix first (OpenCV does)."""
    standin = talking(seconds=1.0)
    video(standin.input_dir / "rp-abc" / "clip.mp4", seconds=0.4, fps=25, width=stored[0],
          height=stored[1], audio=False, rotation=rotation)
    graph = {
        "1": {"class_type": "VHS_LoadVideo", "inputs": {
            "video": "rp-abc/clip.mp4", "force_rate": 0, "custom_width": custom[0], "custom_height": custom[1],
            "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1, "format": fmt}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 3]}},
        "3": {"class_type": "GetImageSizeAndCount", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
    }
    ws, prompt_id = submit(standin, graph)
    ws.wait_done(prompt_id)
    outputs = history(standin, prompt_id)["outputs"]
    info = json.loads(outputs["2"]["text"][0])
    assert (info["loaded_width"], info["loaded_height"]) == loaded    # the PNGs' real size
    assert (int(outputs["4"]["text"][0]), int(outputs["5"]["text"][0])) == loaded
    assert (info["source_width"], info["source_height"]) == (stored if rotation % 180 == 0 else stored[::-1])
    assert info["loaded_frame_count"] == 10


def _frame(path: Path, index: int) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"select=eq(n\\,{index})",
                           "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                          capture_output=True, check=True).stdout


def _differs(a: bytes, b: bytes) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / max(1, len(a)) + 0.01


def test_long_form_frames_appear_window_by_window_and_hang_waits_for_interrupt(talking, tmp_path):
    standin = talking(seconds=7.0, behaviour={"fail": "hang", "at_window": 3, "step_delay_s": 0})
    frames_root = tmp_path / "frames"
    ws, prompt_id = submit(standin, infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav",
                                                       output_path=str(frames_root)))
    # 175 frames of audio: windows of 81, +72, +72. The run hangs when window 3 starts.
    ws.wait_for(lambda ms: sum(m["type"] == "progress" and m["data"]["node"] == "11" for m in ms) == 6)
    (folder,) = frames_root.iterdir()
    assert re.fullmatch(r"\d{8}_\d{6}_infinitetalk_output", folder.name)
    deadline = time.monotonic() + 30      # window 2 writes its frames after its last step
    while len(list(folder.iterdir())) < 153 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_{i:05d}.png" for i in range(153)]

    requests.post(f"{standin.url}/interrupt", json={}, timeout=10)
    messages = ws.wait_done(prompt_id)
    interrupted = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
    assert interrupted[0]["node_type"] == "WanVideoSampler"
    assert history(standin, prompt_id)["status"]["status_str"] == "error"
    assert len(list(folder.iterdir())) == 153


def test_long_form_run_reports_its_frames_folder_and_a_cached_rerun_runs_nothing(talking, tmp_path):
    standin = talking(seconds=4.0)
    graph = infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", output_path=str(tmp_path / "job1"))
    ws, first = submit(standin, graph)
    ws.wait_done(first)
    (folder,) = (tmp_path / "job1").iterdir()
    assert len(list(folder.glob("frame_*.png"))) == 153           # 100 frames of audio: 2 windows
    assert history(standin, first)["outputs"]["13"] == {"text": [str(folder)]}

    # The same graph again: ComfyUI answers from its cache, no node runs, no new frames.
    ws2, second = submit(standin, graph, client_id="again")
    messages = ws2.wait_done(second)
    cached = next(m["data"]["nodes"] for m in messages if m["type"] == "execution_cached")
    assert sorted(cached, key=int) == sorted(graph, key=int)
    assert not [m for m in messages if m["type"] == "executing" and m["data"]["node"] is not None]
    assert history(standin, second)["outputs"]["13"] == {"text": [str(folder)]}

    # Another output_path re-runs the InfiniteTalk node and what follows it, nothing upstream.
    graph["7"]["inputs"]["output_path"] = str(tmp_path / "job2")
    ws3, third = submit(standin, graph, client_id="third")
    ran = [m["data"]["node"] for m in ws3.wait_done(third) if m["type"] == "executing" and m["data"]["node"]]
    assert ran == ["7", "11", "12", "13"]
    (folder2,) = (tmp_path / "job2").iterdir()
    assert len(list(folder2.glob("frame_*.png"))) == 153


def test_oom_fails_the_sampler_in_the_chosen_window(talking):
    standin = talking(seconds=4.4, behaviour={"fail": "oom", "at_window": 2})
    ws, prompt_id = submit(standin, infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", steps=2))
    messages = ws.wait_done(prompt_id)
    error = next(m["data"] for m in messages if m["type"] == "execution_error")
    assert error["node_type"] == "WanVideoSampler" and error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("CUDA out of memory. Tried to allocate")
    assert [m["data"]["value"] for m in messages if m["type"] == "progress"] == [1, 2]
    assert history(standin, prompt_id)["status"]["messages"][-1][0] == "execution_error"


def test_exec_error_set_at_run_time_hits_the_chosen_node_then_clears_after_times(talking):
    standin = talking(seconds=1.0)
    standin.set_behaviour({"fail": "exec_error", "node_type": "WanVideoVAELoader", "times": 1})
    graph = infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", steps=1)
    ws, prompt_id = submit(standin, graph)
    error = next(m["data"] for m in ws.wait_done(prompt_id) if m["type"] == "execution_error")
    assert error["node_id"] == "3" and error["node_type"] == "WanVideoVAELoader"
    assert {"exception_message", "exception_type", "traceback", "current_inputs", "executed"} <= set(error)
    ws2, second = submit(standin, graph, client_id="retry")
    ws2.wait_done(second)
    assert history(standin, second)["status"]["status_str"] == "success"
    posted = [r for r in standin.requests() if r["method"] == "POST" and r["path"] == "/prompt"]
    assert [r["body"]["prompt"] for r in posted] == [graph, graph]
    assert [r["status"] for r in posted] == [200, 200]


def test_settings_point_the_worker_at_the_standin(comfy_standin):
    standin = comfy_standin()
    settings = standin.settings(job_timeout_s=5.0)
    assert settings.comfy_url == standin.url and settings.comfy_dir == standin.base_dir
    assert settings.comfy_input_dir.is_dir() and settings.job_timeout_s == 5.0
    assert settings.work_dir.is_dir() and settings.volume_dir.is_dir()
    assert requests.get(f"{settings.comfy_url}/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}


def test_die_kills_the_process_in_the_chosen_window(talking, tmp_path):
    standin = talking(seconds=4.4, behaviour={"fail": "die", "at_window": 2, "step_delay_s": 0})
    ws, _ = submit(standin, infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav",
                                               output_path=str(tmp_path / "frames")))
    ws.wait_closed()
    standin.process.wait(timeout=30)
    assert not standin.alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{standin.url}/queue", timeout=5)
    (folder,) = (tmp_path / "frames").iterdir()
    assert len(list(folder.iterdir())) == 81


def test_ws_drop_closes_the_socket_once_and_the_run_completes(talking):
    standin = talking(seconds=3.6, behaviour={"fail": "ws_drop", "at_window": 2})
    ws, prompt_id = submit(standin, infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", steps=1))
    ws.wait_closed()
    assert not any(_is_end(m) for m in ws.messages)
    reconnected = WsClient(standin.url, "tester")
    assert reconnected.wait_for(lambda ms: len(ms) >= 1)[0]["type"] == "status"
    deadline = time.monotonic() + 60
    while not requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    done = history(standin, prompt_id)
    assert done["status"]["status_str"] == "success"
    assert done["outputs"]["13"]["gifs"][0]["filename"] == "infinitetalk_00001-audio.mp4"


def test_startup_delay_refuses_connections_until_ready(comfy_standin):
    standin = comfy_standin({"startup_delay_s": 1.0})
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{standin.url}/system_stats", timeout=5)
    standin.wait_ready()
    assert requests.get(f"{standin.url}/system_stats", timeout=5).status_code == 200


# --- validation beyond the recording ------------------------------------------------------------------------

def post(standin, graph: dict) -> requests.Response:
    return requests.post(f"{standin.url}/prompt", json={"prompt": graph, "client_id": "v"}, timeout=30)


def test_model_pickers_list_the_files_in_the_models_folder(comfy_standin):
    standin = comfy_standin()
    standin.add_model("diffusion_models", "InfiniteTalk/custom.safetensors")
    info = requests.get(f"{standin.url}/object_info/WanVideoModelLoader", timeout=10).json()
    assert "InfiniteTalk/custom.safetensors" in info["WanVideoModelLoader"]["input"]["required"]["model"][0]
    graph = {"1": {"class_type": "WanVideoModelLoader", "inputs": {
        "model": "missing.safetensors", "base_precision": "bf16", "quantization": "disabled",
        "load_device": "offload_device"}}, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    error = post(standin, graph).json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "value_not_in_list" and error["details"].startswith("model: 'missing.safetensors' not in")
    graph["1"]["inputs"]["model"] = "InfiniteTalk/custom.safetensors"
    assert post(standin, graph).status_code == 200


def test_partially_valid_graph_is_accepted_and_runs_only_the_valid_output(talking):
    standin = talking(seconds=2.0)
    graph = {
        "1": {"class_type": "INTConstant", "inputs": {"value": 5}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "rp-abc/nope.png"}},
        "4": {"class_type": "GetImageSizeAndCount", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
    }
    response = post(standin, graph)
    assert response.status_code == 200
    errors = response.json()["node_errors"]
    assert errors["3"]["errors"][0]["details"] == "image - Invalid image file: rp-abc/nope.png"
    assert errors["3"]["dependent_outputs"] == ["5"]
    prompt_id = response.json()["prompt_id"]
    deadline = time.monotonic() + 30
    while not requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert history(standin, prompt_id)["outputs"] == {"2": {"text": ["5"]}}


def test_bad_inputs_are_rejected_like_comfyui(talking):
    standin = talking(seconds=1.0)
    assert post(standin, infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav")).status_code == 200
    for node, name, value, kind in [
        ("10", "audio_1", ["5", 0], "return_type_mismatch"),
        ("11", "steps", 0, "value_smaller_than_min"),
        ("6", "width", 99999, "value_bigger_than_max"),
        ("7", "mode", "fastest", "value_not_in_list"),
        ("10", "fps", "fast", "invalid_input_type"),
        ("12", "samples", ["404", 0], "exception_during_inner_validation"),
    ]:
        graph = infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav")
        graph[node]["inputs"][name] = value
        response = post(standin, graph)
        assert response.status_code == 400, kind
        assert response.json()["error"]["type"] == "prompt_outputs_failed_validation", kind
        errors = response.json()["node_errors"]
        assert [e["type"] for n in errors.values() for e in n["errors"]] == [kind]


def test_ranges_are_checked_on_literal_values_only(talking):
    """ComfyUI range-checks widget values; a linked input is only type-checked. So 12000 frames
    reach MultiTalkWav2VecEmbeds.num_frames (max 10000) through an INTConstant, not as a literal."""
    standin = talking(seconds=1.0)
    literal = infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", frames=12000, steps=1)
    response = post(standin, literal)
    assert response.status_code == 400
    [error] = response.json()["node_errors"]["10"]["errors"]
    assert (error["type"], error["message"], error["details"]) == \
        ("value_bigger_than_max", "Value 12000 bigger than max of 10000", "num_frames")

    linked = infinitetalk_graph("rp-abc/face.png", "rp-abc/speech.wav", steps=1)
    linked["20"] = {"class_type": "INTConstant", "inputs": {"value": 12000}}
    linked["10"]["inputs"]["num_frames"] = ["20", 0]
    ws, prompt_id = submit(standin, linked)
    messages = ws.wait_done(prompt_id)
    assert not [m for m in messages if m["type"] == "execution_error"]
    [gif] = history(standin, prompt_id)["outputs"]["13"]["gifs"]
    info = probe(standin.output_dir / gif["subfolder"] / gif["filename"])
    assert 0 < info["video"]["frames"] <= 25          # the embeds node cuts the count to the audio
