"""Every Markdown table this suite writes (a pipe table, then its notes) as a small self-contained HTML page.

Snakemake's HTML report shows .html results inline but only offers .csv files for download, so each table that the
report declares gets an .html twin made from the .md (the text people read), not recomputed from the numbers.
"""

from __future__ import annotations

import html
from pathlib import Path

from pdm.io import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 12px; color: #222; }
table { border-collapse: collapse; margin-bottom: 12px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { border-bottom: 2px solid #444; }
td:first-child, th:first-child { text-align: left; }
tr:hover td { background: #f3f6fa; }
p, li { max-width: 60em; line-height: 1.4; }
"""


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _inline(text: str) -> str:
    """Escape, then the one Markdown emphasis our tables use: **bold** (the separated best of a column)."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{part}</b>" if i % 2 else part for i, part in enumerate(parts))


def markdown_to_html(markdown: str, title: str) -> str:
    lines = markdown.splitlines()
    table = [line for line in lines if line.startswith("|")]
    if len(table) < 2:
        raise ValueError(f"{title}: no Markdown pipe table found (expected a header and a separator line)")
    header, rows = _cells(table[0]), [_cells(line) for line in table[2:]]
    head = "".join(f"<th>{_inline(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    notes, items = [], []
    for line in (line for line in lines if not line.startswith("|") and line.strip()):
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
        else:
            notes.append(f"<p>{_inline(line)}</p>")
    listing = f"<ul>{''.join(items)}</ul>" if items else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"
            f"{''.join(notes)}{listing}\n</body></html>\n")


def write_html_twin(markdown_path: str | Path) -> Path:
    """tables/{name}.md -> tables/{name}.html (atomic); returns the HTML path."""
    markdown_path = Path(markdown_path)
    target = markdown_path.with_suffix(".html")
    text = markdown_to_html(markdown_path.read_text(encoding="utf-8"), markdown_path.stem)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
