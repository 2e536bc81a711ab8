"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file.

Both `compare` and `study` build their reports from these five blocks, so the two renderings
never drift apart: what the Markdown says, the HTML says, with the figures inlined as base64
PNGs (the HTML file can be mailed or opened anywhere without its folder).

Text in paragraphs and list items may use two pieces of inline Markdown, `code` and **bold**;
the HTML renderer escapes everything else.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from unmasked.files import atomic_write_texts


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    rows: list[list[str]]  # the first row is the header

    def __post_init__(self):
        widths = {len(r) for r in self.rows}
        if len(widths) > 1:
            raise ValueError(f"table rows of different lengths {sorted(widths)}: {self.rows[0]}")


@dataclass(frozen=True)
class Figure:
    title: str
    file: str  # a PNG, relative to the report's folder


@dataclass(frozen=True)
class Bullets:
    items: list[str]


Block = Heading | Paragraph | Table | Figure | Bullets


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [b.text, ""]
        elif isinstance(b, Table):
            head, *body = b.rows
            out.append("| " + " | ".join(map(_md_cell, head)) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in body]
            out.append("")
        elif isinstance(b, Figure):
            out += [f"## {b.title}", "", f"![{b.title}]({b.file})", ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        else:
            raise TypeError(f"not a report block: {b!r}")
    return "\n".join(out)


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    """Escape, keeping `code` and **bold**."""
    parts, pos = [], 0
    for m in _INLINE.finditer(text):
        parts.append(html.escape(text[pos : m.start()]))
        parts.append(f"<code>{html.escape(m[1])}</code>" if m[1] is not None else
                     f"<strong>{html.escape(m[2])}</strong>")
        pos = m.end()
    parts.append(html.escape(text[pos:]))
    return "".join(parts)


def inline_figure(title: str, png) -> str:
    """A heading and the PNG inlined as base64, so that an HTML report is one self-contained file."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"


STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}"
         "th{background:#f3f3f3}img{max-width:100%}")


def to_html(blocks: list[Block], title: str, folder: Path) -> str:
    """One HTML file; figures are read from `folder` and inlined."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            head, *body = b.rows
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body]
            parts.append("</table>")
        elif isinstance(b, Figure):
            parts.append(inline_figure(b.title, Path(folder) / b.file))
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        else:
            raise TypeError(f"not a report block: {b!r}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def figures_of(blocks: list[Block]) -> list[str]:
    return [b.file for b in blocks if isinstance(b, Figure)]


def render(blocks: list[Block], folder: Path, title: str, stem: str = "report") -> dict[Path, str]:
    """{folder/report.md: its text, folder/report.html: its text}, written by nothing yet."""
    folder = Path(folder)
    return {folder / f"{stem}.md": to_markdown(blocks), folder / f"{stem}.html": to_html(blocks, title, folder)}


def write(blocks: list[Block], folder: Path, title: str, stem: str = "report") -> list[str]:
    """folder/report.md and folder/report.html, both or neither (see atomic_write_texts); returns
    their names."""
    texts = render(blocks, folder, title, stem)
    atomic_write_texts(texts)
    return [p.name for p in texts]
