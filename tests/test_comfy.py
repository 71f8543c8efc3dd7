"""The ComfyUI client against the ComfyUI stand-in: what a job sees of a run.

Every test drives `ComfyClient` through its public methods (stage, run, cleanup) with the
project's own I2V graph, real media (an espeak-ng voice, scikit-image's astronaut) and a stand-in
that speaks ComfyUI's HTTP and websocket protocol message for message, including its failures.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from infinitetalk_worker import workflows
from infinitetalk_worker.comfy import ComfyClient, Progress
from infinitetalk_worker.errors import ComfyError, ComfyUnavailable, JobCancelled, JobTimeout
from infinitetalk_worker.settings import Settings
from infinitetalk_worker.workflows import Graph
from tests import mediagen

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not mediagen.have_tools(), reason="needs ffmpeg, ffprobe and espeak-ng"),
]

FPS = 25.0
# 154 frames: 81 in the first window, 72 more in the second, one more makes a third.
THREE_WINDOWS = workflows.window_frames(2) + 1


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    speech = mediagen.speech(folder / "speech.wav", seconds=THREE_WINDOWS / FPS + 0.5)
    return {
        "image": mediagen.portrait(folder / "face.png", 256, 256),
        "audio": speech,
        "mux_audio": speech,
    }


def i2v_graph(staged: dict[str, str], tag: str, *, frames: int = THREE_WINDOWS, size: int = 128,
              steps: int = 4, frames_dir: Path | None = None) -> Graph:
    """The project's I2V_single graph with this job's files and a small size bound by title."""
    bindings = workflows.load_bindings()
    prompt = workflows.load_workflow("I2V_single")
    targets = bindings.for_workflow("I2V_single")
    values = {**staged, "filename_prefix": f"{tag}/infinitetalk", "frames": frames, "fps": FPS,
              "width": size, "height": size, "steps": steps}
    for parameter, value in values.items():
        workflows.bind(prompt, targets[parameter], value)
    output = workflows.node_titled(prompt, bindings.output)
    if frames_dir is not None:
        prompt, output = workflows.to_longform(prompt, bindings, frames_dir)
    return Graph("I2V_single", prompt, output, workflows.windows(frames), frames_dir)


def staged_graph(client: ComfyClient, media: dict[str, Path], tag: str, **kwargs) -> Graph:
    return i2v_graph(client.stage(tag, media), tag, **kwargs)


def run_in_thread(client: ComfyClient, graph: Graph, **kwargs) -> dict:
    """Start client.run in a thread; the dict gets "outcome" or "error" when it ends."""
    result: dict = {}

    def target() -> None:
        try:
            result["outcome"] = client.run(graph, **kwargs)
        except Exception as e:  # handed to the test thread
            result["error"] = e

    result["thread"] = threading.Thread(target=target, daemon=True)
    result["thread"].start()
    return result


def wait_for(condition, timeout: float = 20.0) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "condition not met"
        time.sleep(0.05)


def posted(standin, path: str) -> list[dict]:
    return [r for r in standin.requests() if r["method"] == "POST" and r["path"] == path]


# --- success ---------------------------------------------------------------------------------------


def test_a_run_reports_every_window_and_returns_the_video_it_wrote(comfy_standin, media):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    graph = staged_graph(client, media, "rp-job-a")
    reports: list[Progress] = []

    outcome = client.run(graph, on_progress=reports.append)

    sampling = [p for p in reports if p.window is not None]
    assert [p.message for p in sampling] == [
        f"sampling window {w} of 3, step {s}/4" for w in (1, 2, 3) for s in (1, 2, 3, 4)
    ]
    assert all(p.node_type == "WanVideoSampler" for p in sampling)
    elapsed = [p.elapsed_s for p in reports]
    assert elapsed == sorted(elapsed)

    video = outcome.files[0]
    assert video.parent == (standin.output_dir / "rp-job-a").resolve()
    info = mediagen.probe(video)
    assert info["video"]["width"] == 128 and info["audio"] is not None
    assert outcome.frames_dir is None
    assert graph.output_node in outcome.outputs


def test_windows_are_counted_when_sampling_starts_half_way_down_the_schedule(comfy_standin, media):
    # Video-to-video starts at step steps/2: each window samples only the second half.
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    graph = staged_graph(client, media, "rp-job-v2v", steps=6)
    graph.prompt[workflows.node_titled(graph.prompt, "Sampler")]["inputs"]["start_step"] = 3
    reports: list[Progress] = []

    client.run(graph, on_progress=reports.append)

    assert [p.message for p in reports if p.window is not None] == [
        f"sampling window {w} of 3, step {s}/3" for w in (1, 2, 3) for s in (1, 2, 3)
    ]


def test_staged_files_are_links_in_the_jobs_own_input_folder(comfy_standin, media, tmp_path):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    masks = tmp_path / "masks"
    masks.mkdir()
    mediagen.portrait(masks / "1_speaker1.png", 64, 64)

    staged = client.stage("rp-job-s", {"image": media["image"], "audio": media["audio"], "masks": masks})

    assert staged["image"] == "rp-job-s/image.png" and staged["audio"] == "rp-job-s/audio.wav"
    linked = standin.input_dir / staged["image"]
    assert linked.stat().st_ino == media["image"].stat().st_ino
    assert Path(staged["masks"]).is_absolute()
    assert (Path(staged["masks"]) / "1_speaker1.png").is_file()
    assert Path(staged["masks"]).parent == (standin.input_dir / "rp-job-s").resolve()


def test_long_form_returns_the_frames_folder_inside_frames_dir(comfy_standin, media, tmp_path):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    graph = staged_graph(client, media, "rp-job-l", frames=workflows.window_frames(2), frames_dir=frames_dir)

    outcome = client.run(graph)

    assert outcome.frames_dir is not None and outcome.frames_dir.parent == frames_dir.resolve()
    assert len(list(outcome.frames_dir.glob("frame_*.png"))) == workflows.window_frames(2)


# --- rejected graphs ---------------------------------------------------------------------------------


def test_a_missing_model_is_rejected_with_node_input_and_volume_hint(comfy_standin, media):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    graph = staged_graph(client, media, "rp-job-m")
    model = graph.prompt[workflows.node_titled(graph.prompt, "Video model")]
    model["inputs"]["model"] = "not_downloaded.safetensors"

    with pytest.raises(ComfyError) as caught:
        client.run(graph)

    message = str(caught.value)
    assert message.startswith("ComfyUI rejected the workflow: node 'WanVideoModelLoader' input 'model': ")
    assert "'not_downloaded.safetensors' not in the models folder" in message
    assert message.endswith("is the model volume mounted?")


def _unknown_class(prompt: dict) -> None:
    prompt[workflows.node_titled(prompt, "Block swap")]["class_type"] = "WanVideoBlockSwapXL"


def _missing_input(prompt: dict) -> None:
    del prompt[workflows.node_titled(prompt, "Sampler")]["inputs"]["shift"]


def _too_wide(prompt: dict) -> None:
    prompt[workflows.node_titled(prompt, "Resize")]["inputs"]["width"] = 99999


@pytest.mark.parametrize("break_graph, sentence", [
    (_unknown_class, "ComfyUI rejected the workflow: Cannot execute because node WanVideoBlockSwapXL does "
                     "not exist — is its custom node pack installed in the image?"),
    (_missing_input, "ComfyUI rejected the workflow: node 'WanVideoSampler' input 'shift': "
                     "required input is missing"),
    (_too_wide, "ComfyUI rejected the workflow: node 'ImageResizeKJv2' input 'width': "
                "Value 99999 bigger than max of 16384"),
])
def test_validation_errors_read_as_one_sentence(comfy_standin, media, break_graph, sentence):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    graph = staged_graph(client, media, "rp-job-v")
    break_graph(graph.prompt)

    with pytest.raises(ComfyError) as caught:
        client.run(graph)

    assert str(caught.value) == sentence


def test_a_partly_valid_graph_accepted_with_node_errors_still_fails(comfy_standin, media):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    graph = staged_graph(client, media, "rp-job-p")
    # A second output whose input is out of range: ComfyUI queues the valid branch, answers 200
    # and lists the broken one in node_errors.
    graph.prompt["900"] = {"class_type": "ImageResizeKJv2", "inputs": {
        **graph.prompt[workflows.node_titled(graph.prompt, "Resize")]["inputs"], "width": 99999}}
    graph.prompt["901"] = {"class_type": "PreviewAny", "inputs": {"source": ["900", 1]}}

    with pytest.raises(ComfyError) as caught:
        client.run(graph)

    assert str(caught.value).startswith("ComfyUI rejected the workflow: node 'ImageResizeKJv2' input 'width': ")
    accepted = [r for r in posted(standin, "/prompt") if r["status"] == 200]
    assert accepted, "the stand-in should have queued the valid branch"
    assert posted(standin, "/interrupt") or posted(standin, "/queue")


# --- failures while running ----------------------------------------------------------------------------


def test_an_execution_error_names_the_node_and_the_exception(comfy_standin, media):
    standin = comfy_standin({"fail": "exec_error", "node_type": "WanVideoVAELoader",
                             "exception_type": "safetensors.SafetensorError",
                             "exception_message": "Error while deserializing header: header too small"})
    client = ComfyClient(standin.settings())

    with pytest.raises(ComfyError) as caught:
        client.run(staged_graph(client, media, "rp-job-e"))

    assert type(caught.value) is ComfyError
    assert str(caught.value) == (
        "ComfyUI failed in node 'WanVideoVAELoader': "
        "SafetensorError: Error while deserializing header: header too small"
    )


def test_a_broken_gpu_asks_for_a_fresh_worker(comfy_standin, media):
    standin = comfy_standin({"fail": "exec_error", "at_window": 2, "exception_type": "torch.AcceleratorError",
                             "exception_message": "CUDA error: an illegal memory access was encountered"})
    client = ComfyClient(standin.settings())

    with pytest.raises(ComfyUnavailable) as caught:
        client.run(staged_graph(client, media, "rp-job-g"))

    assert str(caught.value) == (
        "the GPU failed in node 'WanVideoSampler' during window 2 of 3 (CUDA error: an illegal memory "
        "access was encountered); the worker will be replaced, retry the job"
    )


def test_out_of_gpu_memory_says_which_window_and_what_to_change(comfy_standin, media):
    standin = comfy_standin({"fail": "oom", "at_window": 2})
    client = ComfyClient(standin.settings())

    with pytest.raises(ComfyError) as caught:
        client.run(staged_graph(client, media, "rp-job-o"))

    assert str(caught.value) == (
        "out of GPU memory while sampling window 2 of 3 at 128×128; use force_offload: true or a smaller size"
    )


def test_comfyui_down_at_start_fails_within_the_ready_timeout(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ComfyClient(Settings(comfy_url=f"http://127.0.0.1:{port}", comfy_dir=tmp_path))

    with pytest.raises(ComfyUnavailable) as caught:
        client.ensure_ready(timeout_s=1.0)

    assert "did not answer" in str(caught.value) and "retry the job" in str(caught.value)


def test_readiness_waits_for_a_slow_start_and_is_checked_once(comfy_standin):
    standin = comfy_standin({"startup_delay_s": 1.5})
    client = ComfyClient(standin.settings())

    client.ensure_ready(timeout_s=30)
    client.ensure_ready(timeout_s=30)

    stats = [r for r in standin.requests() if r["path"] == "/system_stats"]
    assert len(stats) == 1


def test_comfyui_dying_mid_job_fails_within_seconds_as_unavailable(comfy_standin, media):
    standin = comfy_standin({"fail": "die", "at_window": 2, "step_delay_s": 0.05})
    client = ComfyClient(standin.settings(comfy_dead_after_s=2.0))

    with pytest.raises(ComfyUnavailable) as caught:
        client.run(staged_graph(client, media, "rp-job-d"))

    # The messages a dying process had queued may never leave it: the window is the last one
    # that reported, or the next.
    assert re.fullmatch(
        r"ComfyUI stopped responding during window [12] of 3; the worker will be replaced, retry the job",
        str(caught.value),
    )
    assert not standin.alive()
    # The next job checks readiness again instead of trusting the first check.
    with pytest.raises(ComfyUnavailable):
        client.ensure_ready(timeout_s=0.5)


def test_a_dropped_websocket_reconnects_and_the_run_completes(comfy_standin, media):
    standin = comfy_standin({"fail": "ws_drop", "at_window": 2, "step_delay_s": 0.05})
    client = ComfyClient(standin.settings())
    reports: list[Progress] = []

    outcome = client.run(staged_graph(client, media, "rp-job-w"), on_progress=reports.append)

    assert outcome.files and outcome.files[0].is_file()
    connects = [r for r in standin.requests() if r["path"] == "/ws"]
    assert len(connects) == 2
    assert max(p.window or 0 for p in reports) == 3


# --- deadline and cancel ----------------------------------------------------------------------------


def test_a_hung_run_is_interrupted_at_the_deadline(comfy_standin, media):
    standin = comfy_standin({"fail": "hang", "at_window": 2})
    client = ComfyClient(standin.settings())
    graph = staged_graph(client, media, "rp-job-h")

    with pytest.raises(JobTimeout) as caught:
        client.run(graph, deadline=time.monotonic() + 3.0)

    assert "ran out of time" in str(caught.value) and "during window 2 of 3" in str(caught.value)
    interrupts = posted(standin, "/interrupt")
    assert interrupts and interrupts[0]["body"]["prompt_id"]
    history = requests.get(f"{standin.url}/history/{interrupts[0]['body']['prompt_id']}", timeout=5).json()
    last_message = next(iter(history.values()))["status"]["messages"][-1][0]
    assert last_message == "execution_interrupted"


def test_cancel_interrupts_the_run(comfy_standin, media):
    standin = comfy_standin({"step_delay_s": 0.5})
    client = ComfyClient(standin.settings())
    cancel = threading.Event()
    reports: list[Progress] = []

    run = run_in_thread(client, staged_graph(client, media, "rp-job-c"), cancel=cancel,
                        on_progress=reports.append)
    wait_for(lambda: any(p.window for p in reports))
    cancel.set()
    run["thread"].join(timeout=30)

    assert isinstance(run.get("error"), JobCancelled)
    assert "cancelled during window 1 of 3" in str(run["error"])
    assert posted(standin, "/interrupt")


def test_an_interrupt_from_elsewhere_ends_the_job_as_cancelled(comfy_standin, media):
    standin = comfy_standin({"step_delay_s": 0.5})
    client = ComfyClient(standin.settings())
    reports: list[Progress] = []

    run = run_in_thread(client, staged_graph(client, media, "rp-job-x"), on_progress=reports.append)
    wait_for(lambda: any(p.window for p in reports))
    requests.post(f"{standin.url}/interrupt", json={}, timeout=5).raise_for_status()
    run["thread"].join(timeout=30)

    assert isinstance(run.get("error"), JobCancelled)
    assert str(run["error"]) == "ComfyUI's run was interrupted during window 1 of 3 by someone else; retry the job"


# --- two jobs at once, and cleanup ---------------------------------------------------------------------


def test_two_concurrent_jobs_each_get_their_own_video(comfy_standin, media):
    standin = comfy_standin()
    first, second = ComfyClient(standin.settings()), ComfyClient(standin.settings())
    runs = [
        run_in_thread(first, staged_graph(first, media, "rp-job-1", size=128)),
        run_in_thread(second, staged_graph(second, media, "rp-job-2", size=96)),
    ]
    for run in runs:
        run["thread"].join(timeout=60)

    one, two = (run["outcome"].files[0] for run in runs)
    assert one.parent.name == "rp-job-1" and two.parent.name == "rp-job-2"
    assert mediagen.probe(one)["video"]["width"] == 128
    assert mediagen.probe(two)["video"]["width"] == 96


def test_cleanup_removes_only_its_own_jobs_files_and_history(comfy_standin, media):
    standin = comfy_standin()
    client = ComfyClient(standin.settings())
    kept = client.run(staged_graph(client, media, "rp-job-keep", size=96))
    gone = client.run(staged_graph(client, media, "rp-job-gone", size=128))

    client.cleanup("rp-job-gone")

    assert not (standin.input_dir / "rp-job-gone").exists()
    assert not (standin.output_dir / "rp-job-gone").exists()
    assert requests.get(f"{standin.url}/history/{gone.prompt_id}", timeout=5).json() == {}
    assert (standin.input_dir / "rp-job-keep" / "image.png").is_file()
    assert kept.files[0].is_file()
    assert requests.get(f"{standin.url}/history/{kept.prompt_id}", timeout=5).json()
