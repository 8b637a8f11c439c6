"""A report as a list of blocks, rendered twice from the same data: Markdown and standalone HTML.

Text in a block is plain; `Bold(...)` and `Code(...)` parts mark the only inline styles the
report uses. Nothing parses Markdown: each renderer writes its own syntax from the blocks.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Bold:
    text: str


@dataclass
class Code:
    text: str


def _md_marked(text: str, mark: str) -> str:
    """`text` between Markdown markers, its outer spaces outside them: "**Data: **" is not bold."""
    core = text.strip()
    if not core:
        return text
    return text[:len(text) - len(text.lstrip())] + mark + core + mark + text[len(text.rstrip()):]


def _md_inline(parts) -> str:
    parts = [parts] if isinstance(parts, (str, Bold, Code)) else parts
    return "".join(_md_marked(p.text, "**") if isinstance(p, Bold) else _md_marked(p.text, "`")
                   if isinstance(p, Code) else str(p) for p in parts)


def _html_inline(parts) -> str:
    parts = [parts] if isinstance(parts, (str, Bold, Code)) else parts
    return "".join(f"<b>{html.escape(p.text)}</b>" if isinstance(p, Bold) else
                   f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(str(p))
                   for p in parts)


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)   # (kind, payload)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, *parts) -> None:
        self.blocks.append(("paragraph", parts))

    def lines(self, lines: list) -> None:
        """Short lines kept apart (a Markdown hard break, an HTML <br>)."""
        self.blocks.append(("lines", lines))

    def bullets(self, items: list) -> None:
        self.blocks.append(("bullets", items))

    def table(self, header: list, rows: list) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, title: str, file: str) -> None:
        self.blocks.append(("image", (title, file)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    # ------------------------------------------------------------------ renderers

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, x in self.blocks:
            if kind == "heading":
                out += [f"{'#' * x[0]} {x[1]}", ""]
            elif kind == "paragraph":
                out += [_md_inline(list(x)), ""]
            elif kind == "lines":
                out += [_md_inline(line) + "  " for line in x[:-1]] + [_md_inline(x[-1]), ""]
            elif kind == "bullets":
                out += [f"- {_md_inline(item)}" for item in x] + [""]
            elif kind == "table":
                header, rows = x
                out += ["| " + " | ".join(map(_md_inline, header)) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(map(_md_inline, r)) + " |" for r in rows] + [""]
            elif kind == "image":
                out += [f"![{x[0]}]({x[1]})", ""]
            elif kind == "code":
                out += ["```json", x, "```", ""]
        return "\n".join(out)

    def html(self, files_dir: Path) -> str:
        """Standalone HTML: images are inlined from `files_dir`, so the file can be mailed or moved."""
        out = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, x in self.blocks:
            if kind == "heading":
                out.append(f"<h{x[0]}>{html.escape(x[1])}</h{x[0]}>")
            elif kind == "paragraph":
                out.append(f"<p>{_html_inline(list(x))}</p>")
            elif kind == "lines":
                out.append("<p>" + "<br>\n".join(_html_inline(line) for line in x) + "</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in x) + "</ul>")
            elif kind == "table":
                header, rows = x
                out.append("<table><tr>" + "".join(f"<th>{_html_inline(c)}</th>" for c in header) + "</tr>"
                           + "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in r) + "</tr>"
                                     for r in rows) + "</table>")
            elif kind == "image":
                out.append(_html_image(x[0], files_dir / x[1]))
            elif kind == "code":
                out.append(f"<pre>{html.escape(x)}</pre>")
        style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
                 "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _html_image(title: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    return f'<p><img alt="{html.escape(title)}" src="data:{mime};base64,{data}"></p>'
