"""README.zh-CN.md stays in step with README.md.

The Chinese README is for people who deploy facetalk and may never read the English one, so a
command, flag, setting, parameter, route or section that only the English README has is a gap
in their documentation. Pure text: no renders, no server.

Sections are matched through the anchors the Chinese README puts before each heading
(``<a id="english-slug"></a>``): they are the English heading's GitHub slug, so links like
``#parameters`` work in both files and a missing section is reported by its English title.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from facetalk.options import GenerationOptions

ROOT = Path(__file__).resolve().parents[2]
EN = ROOT / "README.md"
ZH = ROOT / "README.zh-CN.md"

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{2,6})\s+(.*?)\s*#*\s*$")
_ANCHOR = re.compile(r'^<a id="([^"]+)"></a>\s*$')
_FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
_SETTING = re.compile(r"\bFACETALK_[A-Z0-9_]*[A-Z0-9]\b")
_ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|WS) (/[^\s`|)<,]*)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")
_LINK = re.compile(r"\]\(#([^)]+)\)")
_ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=(?:\$\([^)]*\)|'[^']*'|\"[^\"]*\"|\S+)\s+)+")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def split_prose_and_code(text: str) -> tuple[list[str], list[str]]:
    """Lines outside fenced code blocks, and lines inside them (fences themselves dropped)."""
    prose: list[str] = []
    code: list[str] = []
    inside = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            inside = not inside
            continue
        (code if inside else prose).append(line)
    return prose, code


def slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", title.lower().replace("`", ""))
    return text.replace(" ", "-")


def headings(text: str) -> list[tuple[int, str, str]]:
    """(level, title, unique slug) of every heading of level 2 or deeper outside code blocks."""
    seen: dict[str, int] = {}
    found: list[tuple[int, str, str]] = []
    for line in split_prose_and_code(text)[0]:
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.append((len(m.group(1)), m.group(2), base if n == 0 else f"{base}-{n}"))
    return found


def anchored_headings(text: str) -> list[tuple[str, int]]:
    """(anchor id, level of the heading right after it) for every ``<a id>`` line outside code blocks."""
    lines = split_prose_and_code(text)[0]
    found: list[tuple[str, int]] = []
    for i, line in enumerate(lines):
        m = _ANCHOR.match(line.strip())
        if not m:
            continue
        nxt = next((x for x in lines[i + 1:] if x.strip()), "")
        h = _HEADING.match(nxt)
        found.append((m.group(1), len(h.group(1)) if h else 0))
    return found


def anchors_glued_to_headings(text: str) -> list[str]:
    """Anchor lines with no blank line after them: CommonMark then swallows the heading as raw HTML."""
    lines = split_prose_and_code(text)[0]
    return [m.group(1) for i, line in enumerate(lines[:-1])
            if (m := _ANCHOR.match(line.strip())) and lines[i + 1].strip()]


def table_count(text: str) -> int:
    """Tables outside code blocks, counted by their header separator rows."""
    return sum(1 for line in split_prose_and_code(text)[0] if re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", line))


def commands(text: str) -> set[str]:
    """Shell commands in code blocks that run facetalk or make, without prompts, env prefixes, comments."""
    joined = "\n".join(split_prose_and_code(text)[1]).replace("\\\n", " ")
    found: set[str] = set()
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        line = _ENV_PREFIX.sub("", line)
        line = re.split(r"\s#", line, maxsplit=1)[0]
        words = line.split()
        if not words:
            continue
        if re.fullmatch(r"(?:\S*/)?facetalk", words[0]):
            words[0] = "facetalk"
        elif words[0] != "make":
            continue
        found.add(" ".join(words))
    return found


def parameters_mentioned(text: str, names: Iterable[str]) -> set[str]:
    """The GenerationOptions fields the text names in backticks (the parameters table does)."""
    return {n for n in names if f"`{n}`" in text}


def option_fields() -> list[str]:
    """The engine's own parameter names, so a new option must reach both READMEs."""
    return [f.name for f in dataclasses.fields(GenerationOptions)]


def _diff(kind: str, en: set[str], zh: set[str]) -> list[str]:
    out = []
    if en - zh:
        out.append(f"{kind} in README.md but not in README.zh-CN.md: " + ", ".join(sorted(en - zh)))
    if zh - en:
        out.append(f"{kind} in README.zh-CN.md but not in README.md: " + ", ".join(sorted(zh - en)))
    return out


def compare(en: str, zh: str, fields: Iterable[str]) -> list[str]:
    """Every difference that leaves the Chinese README behind the English one, as readable lines."""
    problems: list[str] = []
    en_heads = headings(en)
    zh_anchors = anchored_headings(zh)
    zh_ids = [a for a, _ in zh_anchors]
    for level, title, s in en_heads:
        if s not in zh_ids:
            problems.append(f'section missing in README.zh-CN.md: {"#" * level} {title} '
                            f'(add <a id="{s}"></a> before its translated heading)')
    en_ids = [s for _, _, s in en_heads]
    for a, _ in zh_anchors:
        if a not in en_ids:
            problems.append(f'README.zh-CN.md has a section README.md does not: <a id="{a}">')
    common_en = [s for s in en_ids if s in zh_ids]
    common_zh = [a for a in zh_ids if a in en_ids]
    if common_en != common_zh:
        problems.append("sections in a different order: README.md " + " ".join(common_en)
                        + " / README.zh-CN.md " + " ".join(common_zh))
    levels = {s: lv for lv, _, s in en_heads}
    for a, lv in zh_anchors:
        if a in levels and lv != levels[a]:
            problems.append(f'<a id="{a}"> in README.zh-CN.md is followed by a level-{lv} heading, '
                            f"README.md has level {levels[a]}")
    for a in anchors_glued_to_headings(zh):
        problems.append(f'<a id="{a}"></a> in README.zh-CN.md needs a blank line after it')
    if table_count(en) != table_count(zh):
        problems.append(f"tables: README.md has {table_count(en)}, README.zh-CN.md has {table_count(zh)}")
    en_top = sum(1 for lv, _, _ in en_heads if lv == 2)
    zh_top = sum(1 for lv, _, _ in headings(zh) if lv == 2)
    if en_top != zh_top:
        problems.append(f"## sections: README.md has {en_top}, README.zh-CN.md has {zh_top}")

    problems += _diff("commands", commands(en), commands(zh))
    problems += _diff("flags", set(_FLAG.findall(en)), set(_FLAG.findall(zh)))
    problems += _diff("FACETALK_ settings", set(_SETTING.findall(en)), set(_SETTING.findall(zh)))
    names = list(fields)
    en_params = parameters_mentioned(en, names)
    problems += [f"parameter `{n}` of GenerationOptions is named in neither README"
                 for n in names if n not in en_params and n not in parameters_mentioned(zh, names)]
    problems += _diff("GenerationOptions parameters", en_params, parameters_mentioned(zh, names))
    routes = {f"{m} {p.rstrip('.')}" for m, p in _ROUTE.findall(en)}
    problems += _diff("HTTP routes", routes, {f"{m} {p.rstrip('.')}" for m, p in _ROUTE.findall(zh)})
    if _IMAGE.findall(en) != _IMAGE.findall(zh):
        problems.append(f"images differ: README.md {_IMAGE.findall(en)} / "
                        f"README.zh-CN.md {_IMAGE.findall(zh)}")
    return problems


def untranslated_sections(zh: str) -> list[str]:
    """Headings of the Chinese README whose section (up to the next heading) holds no Chinese at all."""
    prose = split_prose_and_code(zh)[0]
    bad: list[str] = []
    title, body = None, []
    for line in prose + ["## end"]:
        m = _HEADING.match(line)
        if m:
            if title is not None and not _CJK.search(title + "".join(body)):
                bad.append(title)
            title, body = m.group(2), []
        else:
            body.append(line)
    return bad


def dangling_links(text: str) -> list[str]:
    """``](#x)`` links whose target is neither a heading slug nor an ``<a id>`` of the same file."""
    targets = {s for _, _, s in headings(text)} | {a for a, _ in anchored_headings(text)}
    return [x for x in _LINK.findall(text) if x not in targets]


# -- the checks on the real files ---------------------------------------------------------------------

def test_chinese_readme_lists_what_the_english_one_does() -> None:
    problems = compare(EN.read_text(encoding="utf-8"), ZH.read_text(encoding="utf-8"), option_fields())
    assert not problems, "README.zh-CN.md is out of step with README.md:\n" + "\n".join(problems)


def test_every_chinese_section_is_translated() -> None:
    assert untranslated_sections(ZH.read_text(encoding="utf-8")) == []


def test_links_between_the_readmes_and_within_them_resolve() -> None:
    en, zh = EN.read_text(encoding="utf-8"), ZH.read_text(encoding="utf-8")
    assert "](README.zh-CN.md)" in en.split("\n## ", 1)[0], "README.md's top must link the Chinese one"
    assert "](README.md)" in zh.split("\n## ", 1)[0], "README.zh-CN.md's top must link the English one"
    assert dangling_links(zh) == []
    assert dangling_links(en) == []


def test_the_extractors_see_the_english_readme() -> None:
    """Guards the comparison against reading nothing (which would make it pass vacuously)."""
    en = EN.read_text(encoding="utf-8")
    assert {"facetalk demo", "make demo", "facetalk serve --host 0.0.0.0"} <= commands(en)
    assert {"--min-resolution", "--queue", "--no-watermark"} <= set(_FLAG.findall(en))
    assert {"FACETALK_API_KEYS", "FACETALK_DEVICE"} <= set(_SETTING.findall(en))
    assert ("POST", "/v1/jobs") in _ROUTE.findall(en)
    assert len(option_fields()) >= 10
    assert sum(1 for lv, _, _ in headings(en) if lv == 2) >= 10


# -- mutations: the comparison must notice what the English README gains --------------------------------

_ADDITIONS = {
    "flag": ("\nUse `--fake-mutation-flag` for this.\n", "flags in README.md but not in README.zh-CN.md: "
             "--fake-mutation-flag"),
    "setting": ("\nSet `FACETALK_FAKE_MUTATION`.\n", "FACETALK_ settings in README.md but not in "
                "README.zh-CN.md: FACETALK_FAKE_MUTATION"),
    "route": ("\n| `GET /v1/fake-mutation` | nothing |\n", "HTTP routes in README.md but not in "
              "README.zh-CN.md: GET /v1/fake-mutation"),
    "command": ("\n```bash\n.venv/bin/facetalk fake-mutation --x 1   # a comment\n```\n",
                "commands in README.md but not in README.zh-CN.md: facetalk fake-mutation --x 1"),
    "table": ("\n| a | b |\n|---|---|\n| 1 | 2 |\n", "tables: README.md has "),
    "section": ("\n## Fake mutation section\n\nText.\n", "section missing in README.zh-CN.md: "
                "## Fake mutation section"),
}


@pytest.mark.parametrize("kind", sorted(_ADDITIONS))
def test_a_new_english_item_is_reported_by_name(kind: str, tmp_path: Path) -> None:
    addition, expected = _ADDITIONS[kind]
    mutated = tmp_path / "README.md"
    mutated.write_text(EN.read_text(encoding="utf-8") + addition, encoding="utf-8")
    zh = ZH.read_text(encoding="utf-8")
    problems = compare(mutated.read_text(encoding="utf-8"), zh, option_fields())
    assert any(p.startswith(expected) for p in problems), problems


def test_a_new_option_field_is_reported(tmp_path: Path) -> None:
    en, zh = EN.read_text(encoding="utf-8"), ZH.read_text(encoding="utf-8")
    en_mutated = en + "\n| `fake_mutation_param` | 1 | 0–1 | nothing |\n"
    problems = compare(en_mutated, zh, [*option_fields(), "fake_mutation_param"])
    assert ("GenerationOptions parameters in README.md but not in README.zh-CN.md: fake_mutation_param"
            in problems), problems
    assert "parameter `fake_mutation_param` of GenerationOptions is named in neither README" in compare(
        en, zh, [*option_fields(), "fake_mutation_param"])


def test_an_anchor_glued_to_its_heading_is_reported() -> None:
    zh = ZH.read_text(encoding="utf-8").replace('<a id="parameters"></a>\n\n', '<a id="parameters"></a>\n', 1)
    problems = compare(EN.read_text(encoding="utf-8"), zh, option_fields())
    assert '<a id="parameters"></a> in README.zh-CN.md needs a blank line after it' in problems, problems
