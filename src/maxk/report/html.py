"""HTML pieces of the report: escaping, tables (optionally sortable by clicking a header, a few
lines of inline JavaScript), figures, and the page shell. The page loads nothing: its images are
``data:`` URIs and its Content-Security-Policy forbids every other source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

MISSING = "—"


@dataclass(frozen=True)
class Cell:
    """A table cell: its text (escaped on output) or raw HTML, and the value a sort uses (a
    number sorts numerically; None sorts last either way)."""

    text: str
    sort: float | str | None = None
    raw: bool = False
    css: str = ""

    def html(self, tag: str = "td") -> str:
        attrs = ""
        if self.sort is not None:
            attrs += f' data-v="{escape(str(self.sort))}"'
        if self.css:
            attrs += f' class="{self.css}"'
        return f"<{tag}{attrs}>{self.text if self.raw else escape(self.text)}</{tag}>"


def missing(label: str = MISSING, why: str = "") -> Cell:
    """A cell for a value that is not there ("refused", "not run", ...), ``why`` as its tooltip;
    it sorts last."""
    title = f' title="{escape(why)}"' if why else ""
    return Cell(f"<span class='missing'{title}>{escape(label)}</span>", raw=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell | str]], *, sortable: bool = False, id: str = "") -> str:
    """An HTML table; plain strings become cells. ``sortable``: clicking a header sorts the rows."""
    cls = ' class="sortable"' if sortable else ""
    ident = f' id="{escape(id)}"' if id else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join((c if isinstance(c, Cell) else Cell(c)).html() for c in row) + "</tr>" for row in rows
    )
    return f"<table{cls}{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(uri: str, alt: str) -> str:
    """An embedded figure (``uri`` a ``data:`` URI)."""
    return f'<figure><img src="{uri}" alt="{escape(alt)}"></figure>'


def para(text: str, css: str = "") -> str:
    """A paragraph of escaped text."""
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{escape(text)}</p>"


def section(ident: str, title: str, *parts: str) -> str:
    """A titled section (its parts are HTML)."""
    return f'<section id="{escape(ident)}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.dataset.order !== 'asc';
      t.querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = asc ? 'asc' : 'desc';
      var rows = Array.from(t.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === undefined || y === undefined) { return (x === undefined) - (y === undefined); }
        var nx = Number(x), ny = Number(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { t.tBodies[0].appendChild(r); });
    });
  });
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
table.sortable th { cursor: pointer; } table.sortable th[data-order=asc]::after { content: " ▲"; }
table.sortable th[data-order=desc]::after { content: " ▼"; }
.scroll { overflow-x: auto; max-height: 40em; overflow-y: auto; }
.missing { color: #999; font-style: italic; } .warn { color: #a40; } .paper { background: #fff8e6; }
.win { background: #e8f6e8; }
figure { margin: .8em 0; } img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: .9em; } small { color: #666; } td.wrap { white-space: normal; text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 0 1.5em; } .grid h3 { margin-bottom: 0; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def page(title: str, body: str) -> str:
    """The whole self-contained page."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}<script>{_SORT_JS}</script></body></html>\n"
    )
