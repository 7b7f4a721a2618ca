"""Royalty-adjusted revenue: what the label keeps after collaborators' splits."""

from __future__ import annotations

from bedrot_lab import Param, experiment, hookimpl

__version__ = "1.0.0"

KEYS = ["Artist", "Title", "Sale Month", "Store"]
SUMS = ["Quantity", "Earnings (USD)"]
GROUPINGS = {
    "by_artist": ["Artist"],
    "by_track": ["Artist", "Title"],
    "by_month": ["Sale Month"],
    "by_platform": ["Store"],
}


def royalty_tables(statement, catalog, default_share: float = 100.0) -> dict:
    """Gross and actual revenue, royalties paid and streams by artist, track, month and platform.

    ``statement`` holds the DistroKid sums per (Artist, Title, Sale Month, Store), and
    optionally ``rows``, how many statement rows each sum is of; a split is constant per track, so applying it after aggregation gives the same
    result as applying it to every statement line. A track (and an artist) is its
    normalised key, shown as most of its rows spell it. Returns the tables by name
    plus ``tracks_with_splits`` and ``totals`` (a dict).
    """
    from bedrot_lab.analysis.royalties import ACTUAL_COLUMN, apply_shares
    from bedrot_lab.analysis.tracks import canonical_spellings

    lines = apply_shares(canonical_spellings(statement, rows="rows" if "rows" in statement else None), catalog,
                         default_share=default_share)
    lines = lines.rename(columns={"Quantity": "streams", "Earnings (USD)": "gross_usd", ACTUAL_COLUMN: "actual_usd"})
    measures = ["streams", "gross_usd", "actual_usd"]
    tables = {}
    for name, keys in GROUPINGS.items():
        table = lines.groupby(keys, as_index=False, observed=True)[measures].sum()
        tables[name] = _with_rates(table).sort_values("gross_usd", ascending=False, ignore_index=True)
    tables["by_month"] = _every_month(tables["by_month"])
    tracks = lines.groupby(["Artist", "Title"], as_index=False).agg(
        share=("share", "first"), in_catalog=("in_catalog", "first"), gross_usd=("gross_usd", "sum"),
        actual_usd=("actual_usd", "sum"))
    tables["tracks_with_splits"] = _with_rates(tracks[tracks["share"] < 1.0]).sort_values(
        "gross_usd", ascending=False, ignore_index=True)
    gross, actual = float(lines["gross_usd"].sum()), float(lines["actual_usd"].sum())
    tables["totals"] = {
        "gross_revenue_usd": gross,
        "actual_revenue_usd": actual,
        "royalties_paid_usd": gross - actual,
        "retention_rate": actual / gross if gross else None,
        "streams": int(lines["streams"].sum()),
        "tracks": len(tracks),
        "tracks_with_splits": int((tracks["share"] < 1.0).sum()),
        "tracks_not_in_catalog": int((~tracks["in_catalog"]).sum()),
    }
    return tables


def _with_rates(table):
    out = table.copy()
    out["royalties_paid_usd"] = out["gross_usd"] - out["actual_usd"]
    gross = out["gross_usd"].where(out["gross_usd"] != 0)
    out["retention_rate"] = out["actual_usd"] / gross
    return out


def _every_month(by_month):
    """One row per month from the first to the last, months without data at zero."""
    import pandas as pd

    if by_month.empty:
        return by_month
    months = pd.date_range(by_month["Sale Month"].min(), by_month["Sale Month"].max(), freq="MS")
    filled = by_month.set_index("Sale Month").reindex(months)
    filled[["streams", "gross_usd", "actual_usd", "royalties_paid_usd"]] = filled[
        ["streams", "gross_usd", "actual_usd", "royalties_paid_usd"]].fillna(0)
    filled["streams"] = filled["streams"].astype("int64")
    return filled.rename_axis("Sale Month").reset_index()


@experiment(
    "royalty-adjusted-revenue",
    datasets=["dk_bank_details", "track_catalog"],
    params={
        "default_share": Param(float, 100.0, "percent the label keeps of tracks not in the catalog", min=0, max=100),
    },
)
def royalty_adjusted_revenue(ctx):
    """Gross against actual revenue after royalty splits, by artist, track, month and platform.

    Splits come from the track catalog's your_revenue_share (percent), matched on
    artist and title without regard to case and spacing; a track spelled several
    ways is one track, under its most common spelling. Tracks not in the catalog
    keep default_share. The statement is streamed and summed per
    artist, track, month and store first; the split is applied to those sums.
    """
    statement = ctx.aggregate("dk_bank_details", by=KEYS, sums=SUMS, rows="rows")
    catalog = ctx.load("track_catalog", columns=["artist", "title", "your_revenue_share"])
    tables = royalty_tables(statement, catalog, ctx.params["default_share"])
    totals = tables.pop("totals")

    ctx.log_metrics({k: v for k, v in totals.items() if k != "retention_rate"})
    if totals["retention_rate"] is None:
        ctx.skip_metric("retention_rate", "gross revenue is zero")
    else:
        ctx.log_metric("retention_rate", totals["retention_rate"])
    for name, table in tables.items():
        ctx.log_table(table, name)

    import matplotlib  # after the query: while DuckDB reads, the other thread is loading MLflow

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_month = tables["by_month"]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.plot(by_month["Sale Month"], by_month["gross_usd"], marker="o", label="gross")
    axis.plot(by_month["Sale Month"], by_month["actual_usd"], marker="o", label="after splits")
    axis.set_ylabel("USD")
    axis.set_title("Monthly revenue: gross and after royalty splits")
    axis.legend()
    figure.autofmt_xdate()
    figure.tight_layout()
    ctx.log_figure(figure, "monthly_gross_vs_actual")

    artists = tables["by_artist"]
    lines = ["| artist | streams | gross (USD) | actual (USD) | retained |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.Artist} | {r.streams:,} | {r.gross_usd:,.2f} | {r.actual_usd:,.2f} | "
              f"{'' if r.retention_rate != r.retention_rate else f'{r.retention_rate:.1%}'} |"
              for r in artists.itertuples()]
    splits = tables["tracks_with_splits"]
    ctx.report(
        "## Royalty-adjusted revenue\n\n"
        f"Gross {totals['gross_revenue_usd']:,.2f} USD; the label keeps {totals['actual_revenue_usd']:,.2f} USD "
        f"and pays {totals['royalties_paid_usd']:,.2f} USD to collaborators. "
        f"{totals['tracks_with_splits']} of {totals['tracks']} tracks have splits; "
        f"{totals['tracks_not_in_catalog']} are not in the catalog and keep {ctx.params['default_share']:g}%.\n\n"
        + "\n".join(lines)
        + "\n\n### Tracks with splits\n\n"
        + "\n".join(f"- {r.Artist} - {r.Title}: {r.share:.0%} kept, {r.royalties_paid_usd:,.2f} USD paid out"
                    for r in splits.itertuples())
    )


@hookimpl
def register_experiments(register):
    register(royalty_adjusted_revenue)
