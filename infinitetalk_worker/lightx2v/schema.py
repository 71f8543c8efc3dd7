"""Request and response bodies of the LightX2V task API, with LightX2V's field names.

The fields are those of LightX2V's `TaskRequest` (lightx2v/server/schema.py) that mean something
for a talking video, plus the InfiniteTalk serving front end's own knobs (`text_guide_scale`,
`audio_guide_scale`, `max_frame_num`). LightX2V fields that this engine cannot honour
(`use_prompt_enhancer`, `num_fragments`, `aspect_ratio`, `target_fps`, `size`, `sample_shift`,
`motion_frame`) are accepted, so existing clients keep working, and have no effect. Anything else
is refused with HTTP 422 naming the field, as LightX2V does.

Unlike LightX2V, the length fields default to "not given": an InfiniteTalk video follows its
audio unless the caller asks for a length.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TalkObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: str = Field(..., description="This speaker's audio: server path, URL, base64 or data URI")
    mask: str = Field(
        "",
        description="Image that is white where this speaker's face is (its bounding box is used); "
        "empty: left/right halves of the frame in talk_objects order",
    )


class VideoTaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str | None = Field(None, description="Task id (generated when not given)")
    prompt: str | None = Field(None, description="Scene description; empty means the default")
    negative_prompt: str | None = Field(None, description="What to avoid")
    image_path: str | None = Field(
        None, description="Condition image OR video: server path, URL, base64 or data URI"
    )
    audio_path: str | None = Field(None, description="Speech: server path, URL, base64 or data URI")
    seed: int | None = Field(None, description="Random seed (random when not given)")
    infer_steps: int | None = Field(None, description="Sampling steps")
    target_video_length: int | None = Field(None, description="Total frames (default: the audio's length)")
    video_duration: float | None = Field(None, description="Length in seconds (default: the audio's length)")
    target_shape: list[float] | None = Field(None, description="[height, width] in pixels")
    save_result_path: str | None = Field(
        None, description="Result file below the outputs folder (default: <task_id>.mp4)"
    )
    talk_objects: list[TalkObject] | None = Field(None, description="Two speakers: [{audio, mask}, ...]")
    text_guide_scale: float | None = Field(None, description="Text guidance (cfg)")
    audio_guide_scale: float | None = Field(None, description="Audio conditioning strength")
    max_frame_num: int | None = Field(None, description="Most frames to make (InfiniteTalk front end)")

    use_prompt_enhancer: bool | None = Field(None, description="Accepted for compatibility; no effect")
    num_fragments: int | None = Field(None, description="Accepted for compatibility; no effect")
    aspect_ratio: str | None = Field(None, description="Accepted for compatibility; no effect")
    target_fps: float | None = Field(None, description="Accepted for compatibility; output is 25 fps")
    size: str | None = Field(None, description="Accepted for compatibility; use target_shape")
    sample_shift: float | None = Field(None, description="Accepted for compatibility; no effect")
    motion_frame: int | None = Field(None, description="Accepted for compatibility; no effect")


IGNORED_FIELDS = (
    "use_prompt_enhancer",
    "num_fragments",
    "aspect_ratio",
    "target_fps",
    "size",
    "sample_shift",
    "motion_frame",
)


class TaskResponse(BaseModel):
    task_id: str
    task_status: str
    save_result_path: str


class StopTaskResponse(BaseModel):
    stop_status: str
    reason: str
