"""Royalty-adjusted revenue: what the label keeps after collaborators' splits."""

from __future__ import annotations

import math

from bedrot_lab import Param, experiment, hookimpl

__version__ = "1.0.0"

#: the statement summed per artist, title, month and store as spelled: the one pass over the file
STATEMENT_SUMS = """
SELECT Artist, Title, "Sale Month", Store, CAST(sum(Quantity) AS BIGINT) AS streams,
       sum("Earnings (USD)") AS gross_usd, count(*) AS rows
FROM dk_bank_details GROUP BY ALL
"""
#: how many rows spell each track each way, to show a track as most of its rows spell it
SPELLINGS = "SELECT Artist, Title, CAST(sum(rows) AS BIGINT) AS rows FROM sums GROUP BY ALL"
#: the sums by track as shown, its split applied (constant per track, so applying it to the
#: sums equals applying it to every line), grouped every way a table needs
TABLES = """
WITH lines AS (
    SELECT tracks.Artist, tracks.Title, sums."Sale Month", sums.Store, tracks.share, tracks.in_catalog,
           sums.streams, sums.gross_usd, sums.gross_usd * tracks.share AS actual_usd
    FROM sums JOIN tracks ON sums.Artist = tracks.spelled_artist AND sums.Title = tracks.spelled_title
)
SELECT grouping(Artist, Title, "Sale Month", Store) AS level, Artist, Title, "Sale Month", Store,
       CAST(sum(streams) AS BIGINT) AS streams, sum(gross_usd) AS gross_usd, sum(actual_usd) AS actual_usd,
       any_value(share) AS share, bool_and(in_catalog) AS in_catalog
FROM lines
GROUP BY GROUPING SETS ((Artist), (Artist, Title), ("Sale Month"), (Store), ())
"""
#: each table's rows in TABLES, by its level: grouping() sets a bit, Artist's the highest,
#: for each of the four columns a grouping leaves out
LEVELS = {"by_artist": 0b0111, "by_track": 0b0011, "by_month": 0b1101, "by_platform": 0b1110, "totals": 0b1111}
MEASURES = ["streams", "gross_usd", "actual_usd"]


def royalty_tables(ctx, default_share: float = 100.0) -> dict:
    """Gross and actual revenue, royalties paid and streams by artist, track, month and platform.

    One pass sums the statement per artist, title, month and store as spelled; the rest
    works on those sums. A track (and an artist) is its normalised key, shown as most of
    its rows spell it, and keeps its catalog split (``default_share`` percent when not in
    the catalog). Returns the tables by name plus ``tracks_with_splits`` and ``totals`` (a dict).
    """
    from bedrot_lab.analysis.royalties import apply_shares
    from bedrot_lab.analysis.tracks import canonical_spellings

    sums = ctx.sql(STATEMENT_SUMS, arrow=True)
    # read after the statement's query, during which MLflow (pandas with it) loaded on another thread
    catalog = ctx.load("track_catalog", columns=["artist", "title", "your_revenue_share"])
    spelled = ctx.sql(SPELLINGS, tables={"sums": sums})
    tracks = apply_shares(canonical_spellings(spelled, rows="rows"), catalog, default_share=default_share,
                          earnings=None)
    tracks["spelled_artist"], tracks["spelled_title"] = spelled["Artist"], spelled["Title"]
    grouped = ctx.sql(TABLES, tables={"sums": sums, "tracks": tracks.drop(columns=["rows"])})
    level = {name: grouped[grouped["level"] == bits] for name, bits in LEVELS.items()}

    tables = {}
    for name, keys in [("by_artist", ["Artist"]), ("by_track", ["Artist", "Title"]),
                       ("by_month", ["Sale Month"]), ("by_platform", ["Store"])]:
        tables[name] = _by_gross(level[name][[*keys, *MEASURES]])
    tables["by_month"] = _every_month(tables["by_month"])
    tracks = level["by_track"]
    with_splits = tracks[tracks["share"] < 1.0]
    tables["tracks_with_splits"] = _by_gross(with_splits[["Artist", "Title", "share", "in_catalog", "gross_usd",
                                                          "actual_usd"]])
    gross, actual = float(level["totals"]["gross_usd"].sum()), float(level["totals"]["actual_usd"].sum())
    tables["totals"] = {
        "gross_revenue_usd": gross,
        "royalty_adjusted_revenue_usd": actual,
        "royalties_paid_usd": gross - actual,
        "retention_rate": actual / gross if gross else None,
        "streams": int(level["totals"]["streams"].sum()),
        "tracks": len(tracks),
        "tracks_with_splits": len(with_splits),
        "tracks_not_in_catalog": int((~tracks["in_catalog"].astype(bool)).sum()),
    }
    return tables


def _by_gross(table):
    return _with_rates(table).sort_values("gross_usd", ascending=False, ignore_index=True)


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
    headline=["royalty_adjusted_revenue_usd", "retention_rate", "royalties_paid_usd", "gross_revenue_usd"],
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
    tables = royalty_tables(ctx, ctx.params["default_share"])
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
    from matplotlib.dates import ConciseDateFormatter, MonthLocator
    from matplotlib.ticker import StrMethodFormatter

    by_month = tables["by_month"]
    figure, axis = plt.subplots(figsize=(7, 4), layout="constrained")
    axis.plot(by_month["Sale Month"], by_month["gross_usd"], marker="o", label="gross")
    axis.plot(by_month["Sale Month"], by_month["actual_usd"], marker="o", label="after royalty splits")
    axis.yaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
    axis.set_ylabel("revenue (USD)")
    axis.set_title("Monthly revenue: gross and after royalty splits")
    axis.legend()
    locator = MonthLocator(interval=max(1, math.ceil(len(by_month) / 8)))
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ctx.log_figure(figure, "monthly_gross_vs_actual")

    artists = tables["by_artist"]
    lines = ["| artist | streams | gross (USD) | actual (USD) | retained |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.Artist} | {r.streams:,} | {r.gross_usd:,.2f} | {r.actual_usd:,.2f} | "
              f"{'' if r.retention_rate != r.retention_rate else f'{r.retention_rate:.1%}'} |"
              for r in artists.itertuples()]
    splits = tables["tracks_with_splits"]
    ctx.report(
        "## Royalty-adjusted revenue\n\n"
        f"Gross {totals['gross_revenue_usd']:,.2f} USD; "
        f"the label keeps {totals['royalty_adjusted_revenue_usd']:,.2f} USD "
        f"and pays {totals['royalties_paid_usd']:,.2f} USD to collaborators. "
        f"{totals['tracks_with_splits']} of {totals['tracks']} tracks have splits; "
        f"{totals['tracks_not_in_catalog']} are not in the catalog and keep {ctx.params['default_share']:g}%.\n\n"
        + "\n".join(lines)
        + "\n\n![Monthly revenue, gross and after royalty splits](figures/monthly_gross_vs_actual.png)"
        + "\n\n### Tracks with splits\n\n"
        + "\n".join(f"- {r.Artist} - {r.Title}: {r.share:.0%} kept, {r.royalties_paid_usd:,.2f} USD paid out"
                    for r in splits.itertuples())
    )


@hookimpl
def register_experiments(register):
    register(royalty_adjusted_revenue)
