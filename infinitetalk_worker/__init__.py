"""InfiniteTalk serverless worker: a job in, a lip-synced talking video out.

The package follows the data through a job, one module per stage:

    request    job input (dict)        -> Request       (validated, defaults applied)
    media      Request                 -> JobMedia      (local files in a per-job folder)
    workflows  Request + JobMedia      -> Graph         (one of four ComfyUI graphs, bound by name)
    comfy      Graph                   -> RunOutcome    (queued, progress streamed, errors translated)
    delivery   RunOutcome              -> result dict   (base64 / volume path / bucket URL)
    pipeline   wires the stages, owns cleanup; every front door calls it.

`settings` holds every environment variable, `errors` every sentence a user reads.
"""

__version__ = "0.1.0"
