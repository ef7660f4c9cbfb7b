"""The one table renderer: aligned plain text for the report, the plan and the CLI, Markdown for cards and sweeps."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, free_last: bool = True) -> list[str]:
    """Lines of an aligned plain-text table: the header, a rule of dashes, the rows.

    Columns are padded to their widest cell and joined by two spaces. With ``free_last`` the last column
    (a reason, a sentence) is not padded and its rule is six dashes, so one long reason does not widen
    every line.
    """
    table = [tuple(header), *(tuple(r) for r in rows)]
    n = len(header) - 1 if free_last else len(header)
    widths = [max(len(t[i]) for t in table) for i in range(n)]

    def line(cells) -> str:
        fixed = "  ".join(c.ljust(w) for c, w in zip(cells[:n], widths))
        return (fixed + "  " + cells[n]) if free_last else fixed.rstrip()

    rule = "  ".join("-" * w for w in widths) + ("  " + "-" * 6 if free_last else "")
    return [line(table[0]), rule, *(line(t) for t in table[1:])]


def markdown_cell(text: str) -> str:
    """A cell's text with ``|`` escaped (a regex's alternation must not end the cell)."""
    return str(text).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a Markdown table; cells are written as given (escape with :func:`markdown_cell`)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]
