"""Markdown as plain terminal text: a run's description and report, readable without a renderer."""

from __future__ import annotations

import re
import textwrap

_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1|(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])|(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)")
_CODE = re.compile(r"`([^`]*)`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+(.*)$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def inline(text: str) -> str:
    """``text`` without inline markup: emphasis and code marks dropped, links as ``text (url)``."""
    codes: list[str] = []

    def keep(match: re.Match[str]) -> str:  # code is shown exactly as written, markup and all
        codes.append(match.group(1))
        return f"\x00{len(codes) - 1}\x00"

    text = _CODE.sub(keep, text)
    text = _LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", text)
    text = _EMPHASIS.sub(lambda m: m.group(2) or m.group(3) or m.group(4), text).replace("\\|", "|")
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def to_terminal(markdown: str, width: int = 100) -> str:
    """``markdown`` as plain text for a terminal ``width`` columns wide: headings
    underlined, paragraphs and list items wrapped, tables aligned, code blocks as they
    are, emphasis and link syntax removed."""
    out: list[str] = []
    lines = markdown.replace("\r\n", "\n").split("\n")
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            out.extend(textwrap.wrap(inline(" ".join(paragraph)), width) or [""])
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append("    " + lines[i])
                i += 1
        elif not stripped:
            flush()
            if out and out[-1] != "":
                out.append("")
        elif heading := _HEADING.match(stripped):
            flush()
            title = inline(heading.group(2))
            out.append(title)
            if len(heading.group(1)) <= 2:
                out.append(("=" if len(heading.group(1)) == 1 else "-") * min(len(title), width))
        elif stripped.startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            flush()
            i += 1
            table = [line, lines[i]]
            while i + 1 < len(lines) and lines[i + 1].strip().startswith("|"):
                i += 1
                table.append(lines[i])
            out.extend(_table(table))
        elif _RULE.match(stripped):
            flush()
            out.append("-" * min(width, 40))
        elif bullet := _BULLET.match(line):
            flush()
            indent = " " * min(len(bullet.group(1)), 8)
            mark = "-" if bullet.group(2) in "-*+" else bullet.group(2)
            item = [bullet.group(3)]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip() \
                    and not _BULLET.match(lines[i + 1]):
                i += 1
                item.append(lines[i].strip())
            out.extend(textwrap.wrap(inline(" ".join(item)), width, initial_indent=f"{indent}{mark} ",
                                     subsequent_indent=indent + " " * (len(mark) + 1)))
        elif stripped.startswith(">"):
            flush()
            out.extend(textwrap.wrap(inline(stripped.lstrip("> ")), width, initial_indent="  | ",
                                     subsequent_indent="  | "))
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)


def _row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())
    if cells and not cells[0].strip():
        cells = cells[1:]
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    return [inline(cell.strip()) for cell in cells]


def _table(lines: list[str]) -> list[str]:
    """A markdown table (header, separator, rows) as aligned columns; ``---:`` aligns right."""
    header, rows = _row(lines[0]), [_row(line) for line in lines[2:]]
    right = [cell.strip().endswith(":") and not cell.strip().startswith(":")
             for cell in re.split(r"(?<!\\)\|", lines[1].strip().strip("|"))]
    count = max(len(header), *(len(row) for row in rows)) if rows else len(header)
    grid = [row + [""] * (count - len(row)) for row in [header, *rows]]
    widths = [max(len(row[c]) for row in grid) for c in range(count)]

    def render(row: list[str]) -> str:
        return "  ".join(cell.rjust(widths[c]) if c < len(right) and right[c] else cell.ljust(widths[c])
                         for c, cell in enumerate(row)).rstrip()

    return [render(grid[0]), "  ".join("-" * w for w in widths), *(render(row) for row in grid[1:])]
