"""Evaluation reports on the page: run directories (results.jsonl, report.md, a PNG plot).

A report directory is any directory one or two levels under the reports root (`runs/qwen-dev`,
`runs/sweep/w4`) holding `report.md` or `results.jsonl`; its name is that relative path. `render_markdown` turns the report into HTML for the page: everything is
escaped first, then a small subset of markdown (headings, pipe tables, lists, code, emphasis,
links, images of files in the same directory) becomes tags, so a report cannot inject markup.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPORT_FILES = ("report.md", "results.jsonl")
SERVED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".md", ".jsonl", ".json", ".csv")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")


@dataclass
class ReportsConfig:
    root: Path = Path("runs")
    max_depth: int = 2


def safe_child(root: Path, name: str) -> Path | None:
    """root/name when name is one plain path component that exists under root, else None."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        return None
    base = root.resolve()
    path = (base / name).resolve()
    if path.parent != base or not path.exists():
        return None
    return path


def report_dir(root: Path, name: str, max_depth: int = 2) -> Path | None:
    """The report directory `name` ('a' or 'a/b') under root, or None when it is not one."""
    parts = name.split("/")
    if not 0 < len(parts) <= max_depth or not all(_SAFE_NAME.fullmatch(p) and ".." not in p for p in parts):
        return None
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base) or not path.is_dir():
        return None
    return path


def _candidates(root: Path, max_depth: int):
    level = [root]
    for _ in range(max_depth):
        level = [d for parent in level for d in sorted(parent.iterdir())
                 if d.is_dir() and not d.is_symlink() and _SAFE_NAME.fullmatch(d.name)]
        yield from level


def list_reports(root: Path, max_depth: int = 2) -> list[dict[str, Any]]:
    """Report directories under root, newest first."""
    if not root.is_dir():
        return []
    reports = []
    for d in _candidates(root, max_depth):
        present = [f for f in REPORT_FILES if (d / f).is_file()]
        if not present:
            continue
        results = d / "results.jsonl"
        n = sum(1 for line in results.open(encoding="utf-8", errors="replace") if line.strip()) if results.is_file() else 0
        mtime = max((d / f).stat().st_mtime for f in present)
        reports.append({"name": d.relative_to(root).as_posix(), "results": n, "has_report": (d / "report.md").is_file(),
                        "plots": plots(d), "mtime": mtime})
    return sorted(reports, key=lambda r: r["mtime"], reverse=True)


def plots(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.png") if _SAFE_NAME.fullmatch(p.name))


def report(root: Path, name: str, file_url: str, max_depth: int = 2) -> dict[str, Any] | None:
    """A report for the page: its markdown rendered, its plots; `file_url` formats '{name}/{file}'."""
    d = report_dir(root, name, max_depth)
    if d is None:
        return None
    md = d / "report.md"
    text = md.read_text(encoding="utf-8", errors="replace") if md.is_file() else ""

    def image_url(src: str) -> str | None:
        return file_url.format(name=quote(name), file=quote(src)) if safe_child(d, src) else None

    body = render_markdown(text, image_url) if text else "<p><em>No report.md in this directory.</em></p>"
    pngs = plots(d)
    shown = set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text))
    return {"name": name, "html": body,
            "plots": [file_url.format(name=quote(name), file=quote(p)) for p in pngs if p not in shown],
            "results": (d / "results.jsonl").is_file()}


# -- a small markdown renderer -----------------------------------------------------------------
_INLINE_CODE = re.compile(r"`([^`]+)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\s][^*]*?)\*(?!\w)")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _inline(text: str, image_url) -> str:
    """Escape, then mark up code, images, links, bold and italics (codes are protected)."""
    codes: list[str] = []
    text = text.replace("\x00", "")

    def keep(m: re.Match) -> str:
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE.sub(keep, text)

    def image(m: re.Match) -> str:
        url = image_url(m.group(2))
        alt = html.escape(m.group(1))
        if url is None:
            return f"[image: {alt}]"
        codes.append(f'<img alt="{alt}" src="{html.escape(url)}">')
        return f"\x00{len(codes) - 1}\x00"

    text = _IMAGE.sub(image, text)

    def link(m: re.Match) -> str:
        href = m.group(2)
        label = html.escape(m.group(1))
        if not re.match(r"https?://", href):
            return label
        codes.append(f'<a href="{html.escape(href)}" rel="noopener noreferrer" target="_blank">{label}</a>')
        return f"\x00{len(codes) - 1}\x00"

    text = _LINK.sub(link, text)
    text = html.escape(text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row.removeprefix("|")
    row = row.removesuffix("|")
    return [c.strip() for c in row.split("|")]


def render_markdown(text: str, image_url=lambda src: None) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append("<p>" + " ".join(_inline(p, image_url) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append("<pre><code>" + html.escape("\n".join(block)) + "</code></pre>")
        elif m := re.match(r"(#{1,6})\s+(.*)", stripped):
            flush()
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2), image_url)}</h{level}>")
        elif "|" in stripped and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            flush()
            head = _cells(stripped)
            rows = []
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_cells(lines[i]))
                i += 1
            i -= 1
            header = "".join(f"<th>{_inline(c, image_url)}</th>" for c in head)
            t = [f"<table><thead><tr>{header}</tr></thead><tbody>"]
            for r in rows:
                t.append("<tr>" + "".join(f"<td>{_inline(c, image_url)}</td>" for c in r) + "</tr>")
            out.append("".join(t) + "</tbody></table>")
        elif re.match(r"[-*+]\s+", stripped) or re.match(r"\d+[.)]\s+", stripped):
            flush()
            ordered = bool(re.match(r"\d", stripped))
            tag = "ol" if ordered else "ul"
            items = []
            pattern = r"\d+[.)]\s+" if ordered else r"[-*+]\s+"
            while i < len(lines) and re.match(pattern, lines[i].strip()):
                items.append("<li>" + _inline(re.sub(pattern, "", lines[i].strip(), count=1), image_url) + "</li>")
                i += 1
            i -= 1
            out.append(f"<{tag}>" + "".join(items) + f"</{tag}>")
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)
