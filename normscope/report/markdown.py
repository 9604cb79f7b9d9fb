"""GitHub-flavoured Markdown: top tables that fit a PR comment or $GITHUB_STEP_SUMMARY.

Every string goes through `fmt.visible` (a Markdown report is read in terminals too: `cat report.md`);
`text.markdown_report` applies it once more to the whole document, so a renderer that builds its own lines
cannot let a control character through.
"""

from __future__ import annotations

from collections.abc import Sequence

from .fmt import visible
from .tables import Table

__all__ = ["md_table", "md_report", "md_verdict"]


def _cell(text: str) -> str:
    return visible(text.replace("|", "\\|"))  # a line break too: shown as \n, so a cell stays one row


def md_table(t: Table) -> str:
    """One GFM table with its title as a heading; empty string when the table has no rows."""
    if not t.rows:
        return ""
    align = [(t.align[i] if i < len(t.align) else ("l" if i == 0 else "r")) for i in range(len(t.headers))]
    lines = [f"### {visible(t.title)}", "",
             "| " + " | ".join(_cell(h) for h in t.headers) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines) + "\n"


def md_verdict(verdict: Sequence[str]) -> list[str]:
    """The verdict as a quoted block of bold lines (empty when there is none)."""
    if not verdict:
        return []
    return ["  \n".join(f"> **{visible(line)}**" if i == 0 else f"> {visible(line)}"
                        for i, line in enumerate(verdict)), ""]


def md_report(title: str, header: Sequence[str], tables: Sequence[Table], notes: Sequence[tuple[str, str]] = (),
              sections: Sequence[str] = (), notes_title: str = "Notes", label_info: bool = True,
              verdict: Sequence[str] = ()) -> str:
    """A command's report: `## title`, the verdict, the header as a list, the non-empty tables, extra `sections`
    (lines), then the (severity, text) notes under `### notes_title` (info unlabelled unless `label_info`)."""
    parts = [f"## {visible(title)}", ""] + md_verdict(verdict)
    parts += [f"- {visible(line)}" for line in header] + [""]
    parts += [md for t in tables if (md := md_table(t))]
    parts += [visible(line) for line in sections]  # lines: a name cannot break out of a code block
    if notes:
        parts.append(f"### {visible(notes_title)}\n")
        parts += [f"- **{sev}**: {visible(text)}" if label_info or sev != "info" else f"- {visible(text)}"
                  for sev, text in notes]
    return "\n".join(parts).rstrip() + "\n"
