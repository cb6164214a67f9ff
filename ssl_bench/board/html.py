"""The report page: one self-contained HTML file (CSS, a few lines of script for sorting tables, figures as PNG data
URIs), so it opens offline and can be mailed as one file. First what the run found (per protocol the ranking and
every claim against scratch, or that there is none), then the leaderboard of every protocol with intervals and
claim marks (tables sort by a click on a column), each protocol's dot plot and critical-difference diagram,
label-fraction curves, the compute table, failed jobs, a link to every job's result file and the run manifest.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

from ssl_bench.board.plots import Style, cd_diagram, dot_plot, fraction_curves, variant_styles
from ssl_bench.board.schema import Cell, Section, Table
from ssl_bench.board.sections import demo_banner, leaderboard_sections, run_line
from ssl_bench.board.tables import friedman_result
from ssl_bench.record import FailureRecord, ResultRecord

if TYPE_CHECKING:
    from ssl_bench.board.load import Board


def render_html(board: Board, run_config: str | None) -> str:
    """The report page as one HTML string; ``run_config`` is the run's resolved configuration, if known."""
    summary = board.summary
    styles = variant_styles(summary["variant"])
    demo = demo_banner(board.records)
    findings, *sections = leaderboard_sections(board)
    # The first screen answers "which method, and is it real?"; how the run was made comes last.
    top = [f'<p class="banner">{_inline(demo.removeprefix("> "))}</p>'] if demo else []
    top += [f"<p>{_inline(budgets)}</p>"] if (budgets := run_line(board.records)) else []
    top.append(_section(findings, "findings"))
    contents, parts = [(findings.level, findings.title, "findings")], []
    for section in sections:
        anchor = _anchor(section.title)
        contents.append((section.level, section.title, anchor))
        parts.append(_section(section, anchor))
        if section.protocol:
            parts += _protocol_figures(summary[summary["protocol"] == section.protocol], styles, demo is not None)
    if (curves := fraction_curves(summary, styles)) is not None:
        contents.append((2, "Label-fraction curves", "label-fraction-curves"))
        parts += ['<h2 id="label-fraction-curves">Label-fraction curves</h2>', _image(curves, "label-fraction curves")]
    contents += [(2, "Jobs", "jobs"), (2, "Run manifest", "manifest")]
    parts += [_jobs(board.records), *_manifest(board.records, board.problems, board.failures, run_config)]
    return _page("\n".join(top), _contents(contents), "\n".join(parts))


def _manifest(
    results: list[ResultRecord], problems: list[str], failures: list[FailureRecord], run_config: str | None
) -> list[str]:
    names = sorted({name for r in results for name in r.versions})
    versions = {name: sorted({str(r.versions[name]) for r in results if name in r.versions}) for name in names}
    jobs = f"{len(results)} done, {len(failures)} failed"
    jobs += f", {len(problems)} result file(s) unreadable" if problems else ""
    rows = [
        ("jobs", jobs),
        ("git commit", ", ".join(sorted({r.git_commit or "unknown" for r in results}))),
        ("budgets", ", ".join(sorted({r.budget for r in results}))),
        ("devices", ", ".join(sorted({r.compute.device for r in results}))),
        *((name, ", ".join(found)) for name, found in versions.items()),
    ]
    pools = sorted({(r.pool.id, r.pool.fingerprint) for r in results if r.pool})
    data = sorted({(r.task, r.task_modality, r.data_fingerprint) for r in results})
    parts = ['<h2 id="manifest">Run manifest</h2>', _key_values(rows)]
    parts += [_table(Table("Pretraining pools", ["pool", "fingerprint"], [[Cell(p), Cell(f)] for p, f in pools]))]
    parts += [
        _table(
            Table("Task data", ["task", "modality", "fingerprint"], [[Cell(t), Cell(m), Cell(f)] for t, m, f in data])
        )
    ]
    if problems:
        parts.append("<p>Left out:</p><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    if run_config is not None:
        parts.append(f"<details><summary>run-config.toml</summary><pre>{html.escape(run_config)}</pre></details>")
    return parts


def _protocol_figures(rows: pd.DataFrame, styles: dict[str, Style], demo: bool) -> list[str]:
    parts = [_image(dot_plot(rows, demo, styles), f"dot plot of {rows['protocol'].iloc[0]}")]
    found = friedman_result(rows)
    if found is not None and found[1].informative:
        parts.append(_image(cd_diagram(*found, styles), f"critical-difference diagram of {rows['protocol'].iloc[0]}"))
    return parts


def _jobs(results: list[ResultRecord]) -> str:
    header = ["job", "variant", "task", "protocol", "label fraction", "seed", "headline", "score", "finished"]
    rows = []
    for r in sorted(results, key=lambda r: (r.protocol.label, r.task, r.variant, r.label_fraction, r.seed_index)):
        scores = r.metrics[r.headline_metric]
        score = scores.value if scores.value is not None else _mean(scores.per_image)
        link = f'<td><a href="../runs/{html.escape(r.job_id)}/result.json">{html.escape(r.job_id)}</a></td>'
        cells = [Cell(r.variant), Cell(r.task), Cell(r.protocol.label), Cell(f"{r.label_fraction:g}", r.label_fraction)]
        cells += [Cell(str(r.seed_index), r.seed_index), Cell(r.headline_metric), Cell(f"{score:.3f}", score)]
        rows.append([link, *(_cell(cell) for cell in cells), _cell(Cell(r.finished))])
    caption = "Every finished job; each id links to its result record (per-image scores, settings, compute)."
    return '<h2 id="jobs">Jobs</h2>\n' + _table_html(caption, header, rows, "jobs")


def _mean(values: list[float | None]) -> float:
    """The mean of per-image scores; NaN if any is undefined, as in the leaderboard."""
    return math.nan if not values or None in values else sum(values) / len(values)


def _section(section: Section, anchor: str) -> str:
    level = min(section.level, 6)
    parts = [f'<h{level} id="{anchor}">{_inline(section.title)}</h{level}>']
    tables = 0
    for block in section.blocks:
        if isinstance(block, str):
            parts.append(f"<p>{_inline(block)}</p>")
            continue
        tables += 1
        parts.append(_table(block, anchor if tables == 1 else f"{anchor}-{tables}"))
    return "\n".join(parts)


def _table(table: Table, name: str = "") -> str:
    rows = [[_cell(cell) for cell in row] for row in table.rows]
    return _table_html(table.caption, table.header, rows, name)


def _table_html(caption: str, header: list[str], rows: list[list[str]], name: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return (
        f'<table class="sortable" data-name="{html.escape(name)}"><caption>{_inline(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
    )


def _cell(cell: Cell) -> str:
    value = "" if cell.value is None or math.isnan(cell.value) else repr(float(cell.value))
    attribute = f' data-value="{value}"' if cell.value is not None else ""
    text = html.escape(cell.text)
    text = f"<strong>{text}</strong>" if cell.bold else text
    detail = f'<div class="detail">{html.escape(cell.detail)}</div>' if cell.detail else ""
    return f"<td{attribute}>{text}{html.escape(cell.marks)}{detail}</td>"


def _key_values(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="manifest">{body}</table>'


def _image(figure: Figure, description: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="{html.escape(description)}" src="data:image/png;base64,{data}"></figure>'


def _inline(text: str) -> str:
    """Escape ``text`` and turn its inline Markdown (`code`, **bold**) into HTML."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _contents(entries: list[tuple[int, str, str]]) -> str:
    return "".join(
        f'<li class="level{level}"><a href="#{anchor}">{_inline(title)}</a></li>' for level, title, anchor in entries
    )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
nav ul { columns: 3; list-style: none; padding: 0; } nav li.level3 { padding-left: 1.2rem; font-size: 0.9em; }
.banner { background: #fff3cd; border: 1px solid #e0c36b; padding: 0.6rem 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.6rem; font-size: 0.88rem; }
caption { caption-side: top; text-align: left; padding-bottom: 0.4rem; max-width: 1100px; color: #444; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child, table.manifest th, table.manifest td { text-align: left; }
table.sortable th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[data-order="asc"]::after { content: " ▲"; } th[data-order="desc"]::after { content: " ▼"; }
.detail { color: #777; font-size: 0.75rem; }
figure { margin: 0.5rem 0 2rem; } img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; }
"""


# Numbers sort by their data-value (cells without one last), everything else by its text.
_SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    const ascending = th.dataset.order !== "asc";
    table.querySelectorAll("th").forEach((other) => delete other.dataset.order);
    th.dataset.order = ascending ? "asc" : "desc";
    const key = (row) => {
      const cell = row.cells[column];
      return "value" in cell.dataset ? parseFloat(cell.dataset.value) : cell.textContent.trim();
    };
    const compare = (a, b) => {
      const x = key(a), y = key(b);
      if (typeof x === "number" && typeof y === "number") {
        if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);
        return ascending ? x - y : y - x;
      }
      return ascending ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
    };
    const body = table.tBodies[0];
    body.append(...[...body.rows].sort(compare));
  }));
}
"""


def _page(top: str, contents: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ssl-bench report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>ssl-bench report</h1>
{top}
<nav><ul>{contents}</ul></nav>
{body}
<script>{_SCRIPT}</script>
</body>
</html>
"""
