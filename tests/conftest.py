"""Shared test fixtures. Each helper module registers its fixtures through pytest_plugins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("INFINITETALK_SHARED", REPO.parent / "shared"))
COMFY_SHARED = SHARED / "comfyui"
OBJECT_INFO = COMFY_SHARED / "object_info_infinitetalk.json"
TRANSCRIPTS = COMFY_SHARED / "transcripts"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest_plugins = ["tests.standin.fixture"]


def shared_or_skip() -> Path:
    """The ../shared ComfyUI reference data, or skip the test on a fresh clone without it."""
    if not OBJECT_INFO.is_file():
        pytest.skip(f"{COMFY_SHARED} is absent (reference ComfyUI data); skipped on a fresh clone")
    return COMFY_SHARED


@pytest.fixture
def shared_comfy() -> Path:
    return shared_or_skip()
