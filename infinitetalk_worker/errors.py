"""The sentences a user reads when a job fails, and the exceptions that carry them.

A caller of the endpoint sees only `{"error": "<sentence>"}`. The worker we replace said
"video not found" for every failure; here every failure a user can act on is raised as a
`WorkerError` whose message is one sentence naming the field or stage and what to change.
Anything else is a bug: the pipeline logs it with its traceback and reports a short generic
sentence, never the traceback itself.

Nothing that reaches a user or a log may carry a base64 payload or a secret: `redact` is
applied to every error sentence and every log line that quotes user input.
"""

from __future__ import annotations

import re


class WorkerError(Exception):
    """A failure with a sentence meant for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = redact(message)

    def __str__(self) -> str:
        return self.message


class ConfigError(WorkerError):
    """A setting of the worker (an environment variable) is wrong."""


class InputError(WorkerError):
    """The job's input is wrong; `field` names the offending input field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class ComfyError(WorkerError):
    """ComfyUI rejected the graph or failed while running it."""


class ComfyUnavailable(ComfyError):
    """ComfyUI is not answering or died; the worker should be replaced."""


class JobTimeout(ComfyError):
    """The job ran past its deadline and was interrupted."""


class JobCancelled(ComfyError):
    """The job was cancelled (ComfyUI interrupted) before it finished."""


class DeliveryError(WorkerError):
    """The finished video could not be handed to the caller."""


class EncodeError(WorkerError):
    """ffmpeg could not turn the generated frames into the MP4 (long-form videos)."""


# Runs of base64 long enough to be a payload rather than a word; data URIs too.
_DATA_URI = re.compile(r"data:[\w.+/-]+;base64,[A-Za-z0-9+/=\s]*")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{120,}={0,2}")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)((?:secret|password|passwd|token|api[_-]?key|access[_-]?key(?:_id)?|authorization)"
    r"[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)([^\s\"',;}]+)"
)
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
_SIGNED_QUERY = re.compile(r"(?i)([?&](?:X-Amz-Signature|X-Amz-Credential|Signature|sig|token)=)[^&\s]+")


def redact(text: str) -> str:
    """Strip base64 payloads and secrets from a sentence or log line."""
    text = _DATA_URI.sub("data:…;base64,<redacted>", text)
    text = _BASE64_RUN.sub("<base64 redacted>", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + "<redacted>", text)
    text = _AWS_KEY_ID.sub("<redacted key id>", text)
    text = _URL_CREDENTIALS.sub("<redacted>@", text)
    text = _SIGNED_QUERY.sub(lambda m: m.group(1) + "<redacted>", text)
    return text
