"""The README tells the truth: every setting with its real default, commands that exist.

A newcomer copies the README's commands and reads its settings table to configure an endpoint;
a setting missing from the table, a wrong default, or a command naming a module or file that
is not there costs them an afternoon.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from infinitetalk_worker.settings import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _settings_table() -> dict[str, str]:
    section = README.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (.*?) \|", section, flags=re.M)
    return {name: default.strip("`") for name, default in rows}


def _default_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ":".join(map(str, value)) or "(none)"
    return str(value) if value != "" else "(none)"


@pytest.mark.parametrize("setting", dataclasses.fields(Settings), ids=lambda f: f.metadata["env"])
def test_every_setting_is_in_the_readme_with_its_default(setting):
    table = _settings_table()
    name = setting.metadata["env"]
    assert name in table, f"README.md, Settings: {name} is missing"
    assert table[name] == _default_text(setting.default), f"README.md, Settings: {name} default"


def test_the_readme_lists_no_setting_the_worker_does_not_read():
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)}
    assert set(_settings_table()) - known == set()


def _code_blocks() -> str:
    return "\n".join(re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S))


def test_every_module_the_readme_runs_has_a_working_help():
    modules = sorted(set(re.findall(r"python -m (infinitetalk_worker(?:\.\w+)+)", README)))
    assert "infinitetalk_worker.client" in modules and "infinitetalk_worker.lightx2v" in modules
    for module in modules:
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"python -m {module} --help: {done.stderr[-500:]}"


def test_every_file_the_readme_names_exists():
    named = set(re.findall(r"(?<![\w/.-])((?:bench|examples|workflows|schema|infinitetalk_worker)/[\w./-]*\w)",
                           _code_blocks() + README))
    named |= {"test_input.json", "requirements.txt", "requirements-dev.txt", "entrypoint.sh", "Dockerfile"}
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert missing == []


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in README
    assert re.search(r"^\.venv/bin/python -m pytest -q$", ci, flags=re.M)
