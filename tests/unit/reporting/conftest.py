"""The report page read back as a reader sees it: its sections, each one's tables (cell text) and charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.report_runs import out_run_folder


@dataclass
class Section:
    """One <section> of the page: its tables as rows of cell text, and how many <svg> charts it holds."""

    tables: list[list[list[str]]] = field(default_factory=list)
    charts: int = 0
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, Section] = {}
        self.current: Section | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.current = self.sections.setdefault(dict(attrs)["id"] or "", Section())
        elif self.current is None:
            return
        elif tag == "svg":
            self.current.charts += 1
        elif tag == "table":
            self.current.tables.append([])
        elif tag == "tr":
            self.current.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None
        elif tag in ("td", "th") and self.current is not None and self.cell is not None:
            self.current.tables[-1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data + " ")
        if self.current is not None:
            self.current.text += data


def read_page(path: Path) -> dict[str, Section]:
    """The page's sections by id."""
    reader = _Reader()
    reader.feed(path.read_text(encoding="utf-8"))
    return reader.sections


def as_dicts(table: list[list[str]]) -> list[dict[str, str]]:
    """A table's body rows keyed by its header."""
    header, *rows = table
    return [dict(zip(header, row)) for row in rows]


def number(cell: str) -> float:
    """A figure as the page shows it ("45,890", "0.9785")."""
    return float(cell.replace(",", ""))


@pytest.fixture(scope="session")
def with_matcher(matched_run: Path) -> Path:
    """The run folder of the subset run with a matcher (tests/conftest.py's matched_run, an OUT folder)."""
    return out_run_folder(matched_run)
