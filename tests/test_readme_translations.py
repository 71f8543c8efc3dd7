"""The Korean and Chinese READMEs say what the English one says.

Many of the worker's users read Korean or Chinese first, and a translation that lags behind
the English README sends them the wrong field names. Only the prose is translated; this test
holds the rest in step: the same sections in the same order, the same tables (same shape,
same field names), the same code blocks character for character, and the same `code` names
in every section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGLISH = REPO / "README.md"
TRANSLATIONS = {
    "README.ko.md": re.compile(r"[\uac00-\ud7a3]"),   # Hangul syllables
    "README.zh.md": re.compile(r"[\u4e00-\u9fff]"),   # CJK ideographs
}

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")


@dataclass
class Section:
    level: int
    title: str
    prose: list[str] = field(default_factory=list)
    code_blocks: list[str] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)  # table -> row -> cell

    @property
    def code_names(self) -> set[str]:
        text = "\n".join(self.prose + [c for t in self.tables for r in t for c in r])
        return set(_INLINE_CODE.findall(text))


def parse(path: Path) -> list[Section]:
    """A README as its sections; the text before the first heading is section 0."""
    sections = [Section(0, "")]
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fence = _FENCE.match(line).group(1)
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence):
                end += 1
            sections[-1].code_blocks.append("\n".join(lines[i:end + 1]))
            i = end + 1
            continue
        if heading := _HEADING.match(line):
            sections.append(Section(len(heading.group(1)), heading.group(2).strip()))
        elif line.lstrip().startswith("|"):
            table = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[i].strip())[1:-1]]
                if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                    table.append(cells)
                i += 1
            sections[-1].tables.append(table)
            continue
        else:
            sections[-1].prose.append(line)
        i += 1
    return sections


def _where(name: str, index: int, section: Section) -> str:
    return f"{name}, section {index} ({'#' * section.level} {section.title or 'preamble'})"


@pytest.fixture(scope="module")
def english() -> list[Section]:
    return parse(ENGLISH)


@pytest.mark.parametrize("name", TRANSLATIONS)
def test_same_sections_in_the_same_order(english, name):
    translated = parse(REPO / name)
    assert [s.level for s in translated] == [s.level for s in english], (
        f"{name} has headings {[('#' * s.level) + ' ' + s.title for s in translated]}, "
        f"README.md has {[('#' * s.level) + ' ' + s.title for s in english]}"
    )
    script = TRANSLATIONS[name]
    untranslated = [s.title for s in translated[1:] if not script.search(s.title) and s.title != ""
                    and any(ch.isalpha() for ch in _INLINE_CODE.sub("", s.title))]
    assert not untranslated, f"{name}: headings left in English: {untranslated}"


@pytest.mark.parametrize("name", TRANSLATIONS)
def test_same_code_blocks_character_for_character(english, name):
    translated = parse(REPO / name)
    for i, (en, tr) in enumerate(zip(english, translated)):
        assert tr.code_blocks == en.code_blocks, (
            f"{_where(name, i, tr)}: code blocks differ from README.md; copy them unchanged"
        )


@pytest.mark.parametrize("name", TRANSLATIONS)
def test_same_tables_with_the_same_field_names(english, name):
    translated = parse(REPO / name)
    for i, (en, tr) in enumerate(zip(english, translated)):
        where = _where(name, i, tr)
        assert len(tr.tables) == len(en.tables), f"{where}: {len(tr.tables)} tables, README.md has {len(en.tables)}"
        for en_table, tr_table in zip(en.tables, tr.tables):
            assert [len(r) for r in tr_table] == [len(r) for r in en_table], f"{where}: table shape differs"
            for en_row, tr_row in zip(en_table[1:], tr_table[1:]):   # the header row is prose
                # Word order changes in translation; the names in each cell do not.
                for en_cell, tr_cell in zip(en_row, tr_row):
                    en_names, tr_names = sorted(_INLINE_CODE.findall(en_cell)), sorted(_INLINE_CODE.findall(tr_cell))
                    assert tr_names == en_names, (
                        f"{where}: row {en_row[0]!r} names {tr_names}, README.md names {en_names}"
                    )


@pytest.mark.parametrize("name", TRANSLATIONS)
def test_same_code_names_in_every_section(english, name):
    translated = parse(REPO / name)
    for i, (en, tr) in enumerate(zip(english, translated)):
        missing, extra = en.code_names - tr.code_names, tr.code_names - en.code_names
        assert not missing and not extra, (
            f"{_where(name, i, tr)}: missing {sorted(missing)}, not in README.md {sorted(extra)}"
        )


@pytest.mark.parametrize("name", TRANSLATIONS)
def test_the_prose_is_translated(english, name):
    translated = parse(REPO / name)
    script = TRANSLATIONS[name]
    for i, (en, tr) in enumerate(zip(english, translated)):
        en_words = " ".join(_INLINE_CODE.sub("", line) for line in en.prose)
        if len(re.findall(r"[A-Za-z]{4,}", en_words)) >= 8:   # a section with real prose
            assert script.search(" ".join(tr.prose)), f"{_where(name, i, tr)}: the prose is not translated"


def test_every_readme_links_the_others():
    for path in [ENGLISH, *(REPO / n for n in TRANSLATIONS)]:
        text = path.read_text(encoding="utf-8")
        for other in ["README.md", *TRANSLATIONS]:
            if other != path.name:
                assert f"({other})" in text, f"{path.name} does not link {other}"
