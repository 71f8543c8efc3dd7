"""A ComfyUI stand-in for the worker's end-to-end tests.

`python -m tests.standin.comfyui --port 0 --base-dir DIR --object-info FILE` serves ComfyUI's
HTTP + websocket API on 127.0.0.1 the way the recordings in ../shared/comfyui/transcripts show
it, message for message: it validates graphs against the recorded node schemas with a port of
ComfyUI's validate_prompt, runs them in ComfyUI's execution order with its node cache, emulates
the InfiniteTalk sampling loop window by window (including `output_path` frame streaming) and
writes real media with ffmpeg where VHS_VideoCombine / SaveImage would.

Modules, following a prompt through the server:
    schema    object_info (with model pickers and input files filled in) and validation
    values    the media values that travel along links (frames, audio) and ffmpeg helpers
    nodes     what each node class does in the stand-in
    engine    execution order, cache, progress messages, behaviour switches (failures)
    comfyui   the aiohttp server: routes, websocket, queue, history; the CLI
    fixture   the `comfy_standin` pytest fixture
"""
