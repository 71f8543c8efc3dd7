"""The LightX2V-compatible task service (API.md §5): InfiniteTalk on your own GPU box, no RunPod.

    python -m infinitetalk_worker.lightx2v

    app      the routes (LightX2V's paths, bodies, status values and codes)
    schema   LightX2V's request and response bodies
    translate  LightX2V request -> the §1 job input the RunPod handler also runs
    store    tasks in SQLite: they and their results survive a restart
    runner   one task at a time, in order; cancel interrupts ComfyUI; old results expire
    limits   the request body cap

The service runs the same `Pipeline` as the RunPod handler, against the local ComfyUI.
"""
