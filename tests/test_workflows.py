"""The four graphs and build_graph: what ComfyUI is asked to run for a job.

Requests come from the real parser (`parse_request`); the media side is the JobMedia contract's
fields. Graphs are inspected only through node titles and validated with the project's validator
against the recorded node schemas (skipped on a fresh clone without ../shared).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from infinitetalk_worker.errors import InputError
from infinitetalk_worker.media import VideoInfo
from infinitetalk_worker.models import load_manifest
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.settings import REPO_ROOT, WORKFLOWS_DIR, Settings
from infinitetalk_worker.validate import load_schema, validate_graph
from infinitetalk_worker.workflows import (
    MAX_FPS, WORKFLOW_NAMES, build_graph, files_to_stage, load_bindings, load_workflow,
    node_titled, source_load_size, upstream, window_frames, windows,
)
from tests.conftest import OBJECT_INFO, shared_or_skip
from tests.standin.values import vhs_target_size

SETTINGS = Settings()


def job(**fields):
    return parse_request({"seed": 1234, **fields}, SETTINGS)


def media_for(request, folder: Path, *, frames: int = 120, fps: float = 25.0, source_fps: float | None = None,
              source: tuple[int, int] = (640, 480), rotation: int = 0):
    """The JobMedia contract's fields for a job whose files are in `folder`."""
    video = request.input_type == "video"
    return SimpleNamespace(
        folder=folder,
        image=None if video else folder / "image.png",
        video=folder / "video.mp4" if video else None,
        video_info=VideoInfo(width=source[0], height=source[1], fps=source_fps or fps, frames=frames,
                             duration_s=frames / fps, has_audio=True, rotation=rotation) if video else None,
        audio=folder / "audio.wav",
        audio_2=folder / "audio_2.wav" if request.person_count == "multi" else None,
        mux_audio=folder / "mux.wav",
        audio_seconds=frames / fps,
        fps=fps,
        frames=frames,
        warnings=[],
    )


def staged_for(files: dict[str, Path]) -> dict[str, str]:
    """Names like ComfyClient.stage gives: files under input/<tag>/, folders as absolute paths."""
    return {key: str(path) if path.is_dir() else f"rp-test/{key}{path.suffix}" for key, path in files.items()}


def build(request, tmp_path: Path, frames_dir: Path | None = None, **media_args):
    media = media_for(request, tmp_path, **media_args)
    staged = staged_for(files_to_stage(request, media))
    graph = build_graph(request, media, staged, SETTINGS, prefix="rp-test/infinitetalk", frames_dir=frames_dir)
    return graph, staged


def inputs_of(graph, title: str) -> dict:
    return graph.prompt[node_titled(graph.prompt, title)]["inputs"]


@pytest.fixture(scope="module")
def schema():
    shared_or_skip()
    return load_schema(OBJECT_INFO)


REPRESENTATIVE = {
    "I2V_single": {},
    "I2V_multi": {"person_count": "multi", "multi_audio_type": "add", "speaker_layout": "right_left"},
    "V2V_single": {"input_type": "video"},
    "V2V_multi": {"input_type": "video", "person_count": "multi",
                  "speaker_boxes": [[0.05, 0.1, 0.45, 0.9], [0.55, 0.1, 0.95, 0.9]]},
}


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_built_graph_is_valid_for_comfyui(name, tmp_path, schema):
    graph, _ = build(job(**REPRESENTATIVE[name]), tmp_path)
    assert graph.name == name
    problems = validate_graph(name, graph.prompt, schema, bindings=load_bindings())
    assert problems == [], "\n".join(map(str, problems))


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_long_form_graph_reports_the_frames_folder_instead_of_a_video(name, tmp_path, schema):
    frames_dir = tmp_path / "frames"
    graph, _ = build(job(**REPRESENTATIVE[name]), tmp_path, frames_dir=frames_dir, frames=2000)
    assert graph.frames_dir == frames_dir
    assert inputs_of(graph, "InfiniteTalk embeds")["output_path"] == str(frames_dir)
    output = graph.prompt[graph.output_node]
    assert output["class_type"] == "PreviewAny"
    source_id, index = output["inputs"]["source"]
    assert schema[graph.prompt[source_id]["class_type"]]["output_name"][index] == "output_path"
    classes = [node["class_type"] for node in graph.prompt.values()]
    assert "VHS_VideoCombine" not in classes
    assert not any(node["_meta"]["title"] == "Mux audio" for node in graph.prompt.values())
    assert validate_graph(name, graph.prompt, schema) == []


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_the_bound_output_is_the_only_output_and_every_node_feeds_it(name, schema):
    prompt = load_workflow(name)
    outputs = [nid for nid, node in prompt.items() if schema[node["class_type"]].get("output_node")]
    assert outputs == [node_titled(prompt, load_bindings().output)]
    assert prompt[outputs[0]]["class_type"] == "VHS_VideoCombine"
    assert upstream(prompt, outputs[0]) == set(prompt)


def test_request_parameters_reach_their_nodes(tmp_path):
    request = job(prompt="A news anchor reading the weather", negative_prompt="blurry",
                  width=640, height=352, steps=8, cfg=1.5, audio_scale=1.3, seed=987654321)
    graph, staged = build(request, tmp_path, frames=200)
    text = inputs_of(graph, "Text encoder")
    assert (text["positive_prompt"], text["negative_prompt"]) == ("A news anchor reading the weather", "blurry")
    assert (inputs_of(graph, "Resize")["width"], inputs_of(graph, "Resize")["height"]) == (640, 352)
    sampler = inputs_of(graph, "Sampler")
    assert (sampler["steps"], sampler["cfg"], sampler["seed"]) == (8, 1.5, 987654321)
    embeds = inputs_of(graph, "Audio embeds")
    assert embeds["num_frames"] == [node_titled(graph.prompt, "Frame count"), 0]
    assert inputs_of(graph, "Frame count")["value"] == 200
    assert (embeds["fps"], embeds["audio_scale"]) == (25.0, 1.3)
    assert inputs_of(graph, "Portrait image")["image"] == staged["image"]
    assert inputs_of(graph, "Speech audio 1")["audio"] == staged["audio"]
    video_out = inputs_of(graph, "Video output")
    assert video_out["filename_prefix"] == "rp-test/infinitetalk"
    assert video_out["frame_rate"] == 25.0
    assert video_out["trim_to_audio"] is True
    mux_id, _ = video_out["audio"]
    assert graph.prompt[mux_id]["inputs"]["audio"] == staged["mux_audio"]
    assert graph.windows == 3 and graph.frames_dir is None
    assert graph.output_node == node_titled(graph.prompt, "Video output")


def test_stored_graph_files_are_not_changed_by_a_build(tmp_path):
    before = (WORKFLOWS_DIR / "I2V_single.json").read_text()
    build(job(prompt="something else entirely"), tmp_path)
    assert (WORKFLOWS_DIR / "I2V_single.json").read_text() == before


def test_force_offload_drives_block_swap_and_model_placement(tmp_path):
    offloaded, _ = build(job(force_offload=True), tmp_path / "a")
    resident, _ = build(job(force_offload=False), tmp_path / "b")
    assert inputs_of(offloaded, "Block swap")["blocks_to_swap"] > 0
    assert inputs_of(offloaded, "Video model")["load_device"] == "offload_device"
    assert inputs_of(offloaded, "Sampler")["force_offload"] is True
    assert inputs_of(resident, "Block swap")["blocks_to_swap"] == 0
    assert inputs_of(resident, "Video model")["load_device"] == "main_device"
    assert inputs_of(resident, "Sampler")["force_offload"] is False
    assert inputs_of(resident, "InfiniteTalk embeds")["force_offload"] is False


def test_attention_backend_comes_from_settings_and_defaults_to_sdpa(tmp_path):
    request = job()
    media = media_for(request, tmp_path)
    staged = staged_for(files_to_stage(request, media))
    default = build_graph(request, media, staged, Settings(), prefix="p")
    faster = build_graph(request, media, staged, Settings(attention_mode="sageattn"), prefix="p")
    assert inputs_of(default, "Video model")["attention_mode"] == "sdpa"
    assert inputs_of(faster, "Video model")["attention_mode"] == "sageattn"


def test_infinitetalk_windows_are_81_frames_overlapping_by_9(tmp_path):
    graph, _ = build(job(), tmp_path)
    embeds = inputs_of(graph, "InfiniteTalk embeds")
    assert (embeds["frame_window_size"], embeds["motion_frame"], embeds["mode"]) == (81, 9, "infinitetalk")
    assert [windows(n) for n in (1, 81, 82, 153, 154, 225, 226)] == [1, 1, 2, 2, 3, 3, 4]
    assert [window_frames(n) for n in (1, 2, 3)] == [81, 153, 225]


def test_v2v_samples_from_the_source_video_at_its_own_rate(tmp_path):
    request = job(input_type="video", steps=6)
    graph, staged = build(request, tmp_path, frames=100, fps=30.0)
    source = inputs_of(graph, "Source video")
    assert source["video"] == staged["video"]
    assert source["force_rate"] == 0                       # the clip's own rate
    assert source["frame_load_cap"] == 153                 # two windows cover 100 frames
    assert inputs_of(graph, "Audio embeds")["fps"] == 30.0
    assert inputs_of(graph, "Video output")["frame_rate"] == 30.0
    sampler = inputs_of(graph, "Sampler")
    encoded_id, _ = sampler["samples"]
    assert graph.prompt[encoded_id]["class_type"] == "WanVideoEncode"
    assert 0 < sampler["start_step"] < sampler["steps"]
    assert sampler["add_noise_to_samples"] is True


def test_v2v_forces_a_rate_only_when_media_chose_another_one(tmp_path):
    graph, _ = build(job(input_type="video"), tmp_path, fps=25.0, source_fps=50.0)
    assert inputs_of(graph, "Source video")["force_rate"] == 25.0


def loaded_sizes(source: tuple[int, int], custom: tuple[int, int]) -> set[tuple[int, int]]:
    """The frame sizes VHS_LoadVideo loads `source` at with these custom sizes, under the format
    "None" rounding (1 pixel, what the graphs use) and the VAE/format rounding (8 pixels)."""
    return {vhs_target_size(*source, *custom, ratio) for ratio in (1, 8)}


def covers(size: tuple[int, int], width: int, height: int) -> bool:
    return size[0] >= width and size[1] >= height


@pytest.mark.parametrize("source, rotation, width, height, custom, near", [
    # 1080p landscape to a square: the height binds; 1920*512/1080 = 910.2 wide.
    ((1920, 1080), 0, 512, 512, (0, 512), (910, 512)),
    # Portrait: the width binds.
    ((1080, 1920), 0, 512, 512, (512, 0), (512, 910)),
    # A phone clip stored landscape and turned upright by its display matrix: frames come out
    # 1080x1920, as from the portrait clip.
    ((1920, 1080), 90, 512, 512, (512, 0), (512, 910)),
    ((1920, 1080), 270, 640, 352, (640, 0), (640, 1138)),
    # The same aspect: either side binds exactly (the width is set).
    ((1920, 1080), 0, 1280, 720, (1280, 0), (1280, 720)),
    # Odd aspects, where VHS rounds the side it computes: 1126*512/2000 = 288.3 -> 288 ...
    ((2000, 1126), 0, 512, 288, (512, 0), (512, 288)),
    # ... 1366*288/768 = 512.25 -> 512 ...
    ((1366, 768), 0, 512, 288, (0, 288), (512, 288)),
    # ... 1998*544/1126 = 965.3 -> 965 (1 px) or 968 (8 px): both cover 960.
    ((1998, 1126), 0, 960, 544, (0, 544), (965, 544)),
])
def test_v2v_loads_the_source_at_the_smallest_size_that_covers_the_target(
        tmp_path, source, rotation, width, height, custom, near):
    graph, _ = build(job(input_type="video", width=width, height=height), tmp_path,
                     source=source, rotation=rotation)
    loader = inputs_of(graph, "Source video")
    assert (loader["custom_width"], loader["custom_height"]) == custom
    frames = source if rotation % 180 == 0 else source[::-1]
    sizes = loaded_sizes(frames, custom)
    assert all(covers(size, width, height) for size in sizes), sizes
    assert vhs_target_size(*frames, *custom, 1) == near
    # The Resize node still crops from there to the job's size.
    assert (inputs_of(graph, "Resize")["width"], inputs_of(graph, "Resize")["height"]) == (width, height)
    # 1080p loaded whole: ~25 MB a frame; at the covering size a quarter of that or less.
    assert near[0] * near[1] * 3 * 4 <= frames[0] * frames[1] * 3 * 4 / 2


@pytest.mark.parametrize("source, width, height", [
    ((320, 240), 512, 512),      # smaller on both sides
    ((640, 360), 640, 352),      # the width would need the whole source
    ((512, 512), 512, 512),      # the same size
    ((600, 300), 512, 512),      # taller target than the source: it is upscaled by Resize anyway
])
def test_v2v_never_loads_above_the_source_size(tmp_path, source, width, height):
    graph, _ = build(job(input_type="video", width=width, height=height), tmp_path, source=source)
    loader = inputs_of(graph, "Source video")
    assert (loader["custom_width"], loader["custom_height"]) == (0, 0)   # the source's own size


def test_load_size_covers_the_target_whatever_vhs_rounds_to():
    """Source sizes from 16 to 2048 a side against request-like targets, and targets that are not
    multiples of 8 (where the covering side itself must be rounded up): the frames VHS loads are
    never below the target, never above the source, and only one custom side is set."""
    checked = 0
    targets = [(512, 512), (640, 352), (1280, 720), (256, 1280), (500, 290), (333, 517)]
    for width, height in targets:
        for src_w in range(16, 2049, 62):
            for src_h in range(16, 2049, 46):
                custom = source_load_size(src_w, src_h, width, height)
                if custom == (0, 0):   # the source itself: only where it is about the target or smaller
                    side, target = (src_w, width) if width / src_w >= height / src_h else (src_h, height)
                    assert side <= target + 16, (src_w, src_h, width, height)
                    continue
                assert 0 in custom and custom != (0, 0)
                for size in loaded_sizes((src_w, src_h), custom):
                    assert covers(size, width, height), (src_w, src_h, width, height, custom, size)
                    assert size[0] <= src_w + 4 and size[1] <= src_h + 4
                checked += 1
    assert checked > 1000


def test_load_size_rounds_the_covering_side_up_past_vhs_rounding():
    # 290 is not a multiple of 8: VHS would load a custom_height of 290 at 288 (8-pixel rounding).
    assert vhs_target_size(1920, 1080, 0, 290, 8)[1] == 288
    custom = source_load_size(1920, 1080, 500, 290)
    assert custom == (0, 296)
    assert all(covers(size, 500, 290) for size in loaded_sizes((1920, 1080), custom))


def test_two_speaker_graph_binds_both_voices_masks_and_audio_type(tmp_path):
    request = job(person_count="multi", multi_audio_type="add")
    graph, staged = build(request, tmp_path)
    embeds = inputs_of(graph, "Audio embeds")
    assert embeds["multi_audio_type"] == "add"
    assert inputs_of(graph, "Speech audio 2")["audio"] == staged["audio_2"]
    masks_id, index = embeds["ref_target_masks"]
    assert graph.prompt[masks_id]["inputs"]["directory"] == staged["masks"]
    assert Path(staged["masks"]).is_dir()
    assert inputs_of(graph, "InfiniteTalk model")["model"].startswith("Wan2_1-InfiniteTalk-Multi")


def test_single_speaker_graphs_use_the_single_model_and_no_masks(tmp_path):
    graph, staged = build(job(input_type="video"), tmp_path)
    assert "masks" not in staged and "audio_2" not in staged
    assert inputs_of(graph, "InfiniteTalk model")["model"].startswith("Wan2_1-InfiniteTalk-Single")
    assert "ref_target_masks" not in inputs_of(graph, "Audio embeds")


def vhs_masks(folder: Path) -> np.ndarray:
    """What VHS_LoadImages hands on: the folder's PNGs in name order, MASK = 1 - alpha."""
    return np.stack([1.0 - np.asarray(Image.open(p).convert("RGBA"))[..., 3] / 255.0
                     for p in sorted(folder.iterdir())])


def test_speaker_masks_follow_the_requested_boxes(tmp_path):
    request = job(person_count="multi", width=512, height=256,
                  speaker_boxes=[[0.6, 0.25, 0.9, 0.75], [0.1, 0.25, 0.4, 0.75]])
    folder = files_to_stage(request, media_for(request, tmp_path))["masks"]
    masks = vhs_masks(folder)
    assert masks.shape == (3, 256, 512)
    assert masks[0, 128, 384] == 1 and masks[0, 128, 128] == 0      # speaker 1: the right face
    assert masks[1, 128, 128] == 1 and masks[1, 128, 384] == 0      # speaker 2: the left face
    assert masks[2, 10, 10] == 1 and masks[2, 128, 384] == 0        # background: neither face
    assert np.array_equal(masks.sum(axis=0), np.ones((256, 512)))


def test_layout_halves_leave_no_background_mask(tmp_path):
    request = job(person_count="multi", speaker_layout="right_left")
    masks = vhs_masks(files_to_stage(request, media_for(request, tmp_path))["masks"])
    assert masks.shape[0] == 2     # an empty background mask would divide by zero in the model
    assert masks[0, 256, 400] == 1 and masks[1, 256, 100] == 1


def test_a_speaker_box_smaller_than_a_model_token_is_refused(tmp_path):
    request = job(person_count="multi", width=512, height=512,
                  speaker_boxes=[[0.001, 0.001, 0.02, 0.02], [0.5, 0.0, 1.0, 1.0]])
    with pytest.raises(InputError) as caught:
        files_to_stage(request, media_for(request, tmp_path))
    assert str(caught.value).startswith("speaker_boxes: the box of speaker 1 is too small")


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_ten_minutes_of_frames_make_a_valid_graph(name, tmp_path, schema):
    """600 s at 25 fps: past the 10000 widget maximum of MultiTalkWav2VecEmbeds.num_frames.

    The count reaches num_frames through the INTConstant "Frame count", which ComfyUI (like the
    validator) does not range-check against the embeds node: a link is only type-checked.
    """
    frames = SETTINGS.max_frames
    assert frames == 15000 and frames > schema["MultiTalkWav2VecEmbeds"]["input"]["required"]["num_frames"][1]["max"]
    for variant, frames_dir in (("short", None), ("long-form", tmp_path / "frames")):
        graph, _ = build(job(**REPRESENTATIVE[name]), tmp_path / variant, frames_dir=frames_dir, frames=frames)
        assert inputs_of(graph, "Frame count")["value"] == frames
        assert inputs_of(graph, "Audio embeds")["num_frames"] == [node_titled(graph.prompt, "Frame count"), 0]
        assert graph.windows == windows(frames) == 209
        if name.startswith("V2V"):
            assert inputs_of(graph, "Source video")["frame_load_cap"] == window_frames(209) == 15057
        problems = validate_graph(name, graph.prompt, schema, bindings=None if frames_dir else load_bindings())
        assert problems == [], "\n".join(map(str, problems))


def test_more_frames_than_the_setting_allows_is_an_input_error(tmp_path):
    request = job()
    media = media_for(request, tmp_path, frames=SETTINGS.max_frames + 1)
    with pytest.raises(InputError) as caught:
        build_graph(request, media, staged_for(files_to_stage(request, media)), SETTINGS, prefix="p")
    assert str(caught.value).startswith("wav_path: 15001 frames at 25 fps is above the 15000 frame limit (MAX_FRAMES)")
    small = SETTINGS.replace(max_frames=100)
    request = job(max_frame=100)
    media = media_for(request, tmp_path, frames=101)
    with pytest.raises(InputError) as caught:
        build_graph(request, media, staged_for(files_to_stage(request, media)), small, prefix="p")
    assert str(caught.value).startswith("max_frame: 101 frames")


def test_a_video_faster_than_the_audio_embedding_takes_is_an_input_error(tmp_path):
    request = job(input_type="video", video_url="https://example.com/clip.mp4")
    media = media_for(request, tmp_path, fps=120.0)
    with pytest.raises(InputError) as caught:
        build_graph(request, media, staged_for(files_to_stage(request, media)), SETTINGS, prefix="p")
    assert str(caught.value).startswith("video_url: the video runs at 120 fps")


def test_rate_limit_matches_the_node_schema(schema):
    embeds = schema["MultiTalkWav2VecEmbeds"]["input"]["required"]
    assert embeds["fps"][1]["max"] == MAX_FPS


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_frame_counts_reach_only_inputs_that_take_the_largest_job(name, schema):
    """Every input a frame count is written into accepts what MAX_FRAMES allows.

    ComfyUI refuses a literal above an input's max ("Value bigger than max"); MultiTalkWav2VecEmbeds'
    num_frames stops at 10000, so it must be fed by a link, and the bound input is the INTConstant.
    """
    largest = {"frames": SETTINGS.max_frames, "video_frames": window_frames(windows(SETTINGS.max_frames))}
    prompt = load_workflow(name)
    bound = load_bindings().for_workflow(name)
    for parameter, needed in largest.items():
        for target in bound.get(parameter, []):
            node = prompt[node_titled(prompt, target.title)]
            spec = schema[node["class_type"]]["input"]["required"][target.input]
            assert spec[0] == "INT" and spec[1]["max"] >= needed, f"{parameter} -> {target}"
    embeds = prompt[node_titled(prompt, "Audio embeds")]
    source_id, _ = embeds["inputs"]["num_frames"]
    assert prompt[source_id]["class_type"] == "INTConstant"
    assert prompt[source_id]["_meta"]["title"] == "Frame count"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_every_binding_resolves_to_an_input_of_a_titled_node(name):
    prompt = load_workflow(name)
    bindings = load_bindings()
    for parameter, targets in {**bindings.for_workflow(name), **bindings.longform_parameters}.items():
        for target in targets:
            node = prompt[node_titled(prompt, target.title)]
            assert target.input in node["inputs"], f"{name}: {parameter} -> {target}"


def test_each_graph_binds_the_media_it_loads():
    bound = {name: set(load_bindings().for_workflow(name)) for name in WORKFLOW_NAMES}
    common = {"audio", "mux_audio", "prompt", "width", "height", "frames", "fps", "seed", "steps", "cfg",
              "audio_scale", "force_offload", "attention_mode", "filename_prefix"}
    assert all(common <= names for names in bound.values())
    assert {"image"} <= bound["I2V_single"] and "video" not in bound["I2V_single"]
    assert {"video", "video_frames", "video_force_rate", "video_load_width", "video_load_height"} <= \
        bound["V2V_single"] & bound["V2V_multi"]
    assert "video_load_width" not in bound["I2V_single"] | bound["I2V_multi"]
    assert {"audio_2", "masks", "multi_audio_type"} <= bound["I2V_multi"] & bound["V2V_multi"]
    assert "audio_2" not in bound["I2V_single"] | bound["V2V_single"]


def test_node_ids_never_name_two_different_nodes_across_the_files():
    seen: dict[str, str] = {}
    for name in WORKFLOW_NAMES:
        for nid, node in load_workflow(name).items():
            assert seen.setdefault(nid, node["_meta"]["title"]) == node["_meta"]["title"]


def test_every_model_a_graph_loads_is_in_the_manifest_and_every_entry_is_used():
    manifest = load_manifest()
    for name in WORKFLOW_NAMES:
        text = json.dumps(load_workflow(name))
        for model in manifest:
            if name in model.workflows:
                wanted = model.name if not model.folder.startswith("transformers/") else \
                    model.folder.removeprefix("transformers/")
                assert json.dumps(wanted) in text, f"{name} does not load {model.file}"
    assert any(m.folder == "transformers/TencentGameMate/chinese-wav2vec2-base" for m in manifest)


def test_no_node_ids_in_python():
    """Python finds nodes by title only: no quoted number as a subscript, a link or a node entry."""
    node_id = re.compile(r"""\[\s*["']\d+["']\s*(\]|,\s*\d+\s*\])|["']\d+["']\s*:\s*\{""")
    offenders = []
    for path in sorted((REPO_ROOT / "infinitetalk_worker").rglob("*.py")) + [REPO_ROOT / "handler.py"]:
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if node_id.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert offenders == []
