"""What a run found, said first: per protocol the ranking and every claim against scratch, or why there is none."""

from __future__ import annotations

import pandas as pd

from ssl_bench.board.claims import BETTER, CLAIM_RULE, SIGNIFICANCE, TOO_FEW_SEEDS, WORSE
from ssl_bench.board.schema import BOARD_Q_VS_SCRATCH, HEADLINE_METRIC, Cell, Section, Table, format_number, seed_range
from ssl_bench.board.tables import column_label, friedman_result, protocols_of, ranks, rows_of
from ssl_bench.stats import MIN_COLUMNS, MIN_SEEDS


def findings_section(summary: pd.DataFrame) -> Section:
    """Per protocol: the ranking (with its critical difference where informative) and every claim against scratch
    with its seeds and test images, or one honest line when there is none."""
    blocks: list[str | Table] = [f"How a claim is made: {CLAIM_RULE}"]
    false_discovery = _false_discovery_line(rows_of(summary, HEADLINE_METRIC))
    blocks += [false_discovery] if false_discovery else []
    for protocol in protocols_of(summary):
        rows = rows_of(summary[summary["protocol"] == protocol], HEADLINE_METRIC)
        blocks.append(_ranking_line(rows, protocol))
        claims = rows[rows["claim_vs_scratch"].isin([BETTER, WORSE])]
        blocks.append(_claims_table(claims, protocol) if len(claims) else _no_claim_line(rows))
    return Section("Findings", blocks)


def _false_discovery_line(rows: pd.DataFrame) -> str | None:
    """How many claims against scratch hold at a 5% false discovery rate over the whole board; None without one."""
    claims = rows[rows["claim_vs_scratch"].isin([BETTER, WORSE])]
    if claims.empty:
        return None
    tested = int(rows[BOARD_Q_VS_SCRATCH].notna().sum())
    holding = int((claims[BOARD_Q_VS_SCRATCH] < SIGNIFICANCE).sum())
    return (
        f"{holding} of the {len(claims)} claim(s) against scratch hold at a {SIGNIFICANCE:.0%} false discovery rate "
        f"over all {tested} headline comparisons with scratch on this board (Benjamini-Hochberg q < {SIGNIFICANCE}: "
        "the claims tables' q column), where a claim's Holm correction counts only its variant's own columns."
    )


def _ranking_line(rows: pd.DataFrame, protocol: str) -> str:
    metrics = ", ".join(sorted(set(rows["metric"])))
    order = ranks(rows, HEADLINE_METRIC).dropna(subset=["mean_rank"])
    if order.empty:
        return f"**`{protocol}`** ({metrics}): no column that every variant completed, so no ranking."
    n_columns = int(order["n_columns"].iloc[0])
    ranking = ", ".join(f"`{r.variant}` {r.mean_rank:.2f}" for r in order.itertuples(index=False))
    line = f"**`{protocol}`** ({metrics}), mean rank over {n_columns} column(s): {ranking}."
    found = friedman_result(rows)
    if found is None or not found[1].informative:
        return f"{line} A critical difference needs {MIN_COLUMNS} columns: the order is not a finding."
    result, top = found[1], float(order["mean_rank"].iloc[0])
    tied = [f"`{r.variant}`" for r in order.itertuples(index=False) if r.mean_rank - top < result.critical_difference]
    return (
        f"{line} Friedman p = {result.p_value:.3g}; within the critical difference ({result.critical_difference:.2f})"
        f" of the best: {', '.join(tied)}."
    )


def _claims_table(claims: pd.DataFrame, protocol: str) -> Table:
    body = []
    for row in claims.itertuples(index=False):
        sign = "▲" if row.claim_vs_scratch == BETTER else "▼"
        body.append(
            [
                Cell(f"{row.variant} {sign}"),
                Cell(column_label(row.task, row.label_fraction)),
                Cell(f"{row.mean:.3f}", row.mean),
                Cell(f"{row.diff_vs_scratch:+.3f}", row.diff_vs_scratch),
                Cell(f"[{row.diff_low:+.3f}, {row.diff_high:+.3f}]", row.diff_low),
                Cell(str(row.n_seeds), row.n_seeds),
                Cell(format_number(row.n_images, 0), row.n_images),
                Cell(f"{row.p_vs_scratch:.2g}", row.p_vs_scratch),
                Cell(f"{row.q_vs_scratch:.2g}", row.q_vs_scratch),
                Cell(row.test_vs_scratch),
            ]
        )
    header = [
        "variant",
        "column",
        "score",
        "vs scratch",
        "95% CI",
        "seeds",
        "test images",
        "p (Holm)",
        "q (board)",
        "test",
    ]
    return Table(f"`{protocol}`: claims against scratch", header, body)


def _no_claim_line(rows: pd.DataFrame) -> str:
    scored = rows[rows["n_seeds"] > 0]  # a cell whose every seed failed has nothing to compare
    claims = scored["claim_vs_scratch"]
    if not (claims != "").any():
        return "Nothing to claim against: no `scratch` cell to compare with."
    too_few = int((claims == TOO_FEW_SEEDS).sum())
    if too_few == (claims != "").sum():
        return (
            f"**Too few seeds to claim anything** against `scratch`: {seed_range(scored)} seed(s) per cell, a claim "
            f"needs {MIN_SEEDS} per variant (`--seeds {MIN_SEEDS}`)."
        )
    unclaimed = f"; {too_few} cell(s) have too few seeds to claim" if too_few else ""
    return (
        f"**No variant is distinguishable from `scratch`** in any column it can be compared in ({seed_range(scored)} "
        f"seed(s) per cell, p >= {SIGNIFICANCE} after Holm over each variant's columns{unclaimed})."
    )
