"""Monthly streaming trends by platform, store and artist, with month-over-month growth."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bedrot_lab import Param, experiment, hookimpl
from bedrot_lab.analysis.platforms import COLORS, platform_group
from bedrot_lab.analysis.tracks import canonical_spellings

if TYPE_CHECKING:
    import pandas as pd

    from bedrot_lab import RunContext

__version__ = "1.0.0"

#: the daily file's stream columns -> the store each counts
DAILY_STORES = {"spotify_streams": "Spotify", "apple_streams": "Apple Music"}
#: artists drawn as their own line in the by-artist chart, by streams; the rest are summed
TOP_ARTISTS = 6


def monthly(streams: pd.DataFrame, by: str, months: pd.DatetimeIndex) -> pd.DataFrame:
    """Streams by month (rows, every month of ``months``) and ``by`` (columns), 0 where nothing was streamed."""
    wide = streams.pivot_table(index="month", columns=by, values="streams", aggfunc="sum", fill_value=0)
    wide = wide.reindex(months, fill_value=0).astype("int64")
    wide = wide[wide.sum().sort_values(ascending=False, kind="stable").index]
    wide.index.name, wide.columns.name = "month", by
    return wide


def growth_pct(wide: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """Month-over-month growth in percent; NaN for the first month and after a month with no streams."""
    previous = wide.shift(1)
    return (wide - previous) / previous.where(previous > 0) * 100.0


def long_table(wide: pd.DataFrame) -> pd.DataFrame:
    """``month`` (YYYY-MM), the group, ``streams`` and ``mom_growth_pct``, one row per month and group."""
    by = wide.columns.name
    out = wide.stack().rename("streams").reset_index()
    out["mom_growth_pct"] = growth_pct(wide.astype("float64")).stack(future_stack=True).to_numpy()
    out["month"] = out["month"].dt.strftime("%Y-%m")
    return out[["month", by, "streams", "mom_growth_pct"]]


#: the statement's streams per sale month, store and artist, summed in DuckDB; ``fewest`` is the
#: smallest Quantity of one row, ``rows`` how many rows each sum is of
STATEMENT_STREAMS = """
    SELECT "Sale Month" AS month, "Store" AS store, "Artist" AS artist,
           CAST(sum("Quantity") AS BIGINT) AS streams, min("Quantity") AS fewest, count(*) AS rows
    FROM dk_bank_details
    GROUP BY "Sale Month", "Store", "Artist"
"""


def load_streams(ctx: RunContext, source: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """Streams as ``month``, ``store``, ``artist`` (statement only), ``streams``; for the daily
    source also the number of days with data in each month. A negative number of streams in
    any row of the data set raises an error naming its file."""
    if source == "statement":
        data = ctx.sql(STATEMENT_STREAMS)
        check_not_negative(data.pop("fewest"), str(ctx.dataset_path("dk_bank_details")))
        return canonical_spellings(data, artist="artist", title=None, rows="rows").drop(columns="rows"), None
    daily = ctx.load("tidy_daily_streams", columns=["date", *DAILY_STORES])
    daily["month"] = daily["date"].dt.to_period("M").dt.to_timestamp()
    days = daily.groupby("month")["date"].nunique().rename("days_with_data")
    data = daily.melt(id_vars=["month"], value_vars=list(DAILY_STORES), var_name="store", value_name="streams")
    data["store"] = data["store"].map(DAILY_STORES)
    check_not_negative(data["streams"], str(ctx.dataset_path("tidy_daily_streams")))
    return data, days


def check_not_negative(streams: pd.Series, where: str) -> None:
    """Raise naming ``where`` and the smallest value when any of ``streams`` is below 0."""
    if streams.lt(0).any():
        raise ValueError(f"{where}: streams should be 0 or more, but found {int(streams.min())}")


def top_and_rest(wide: pd.DataFrame, top: int, rest: str) -> pd.DataFrame:
    """The ``top`` columns of ``wide`` (sorted by streams), the others summed as column ``rest``."""
    shown = wide.iloc[:, :top].copy()
    if wide.shape[1] > top:
        shown[rest] = wide.iloc[:, top:].sum(axis=1)
    return shown


def month_axis(axis, months: int) -> None:
    """The x axis of ``months`` months: at most 8 ticks, short month names, the year where it changes."""
    from matplotlib.dates import ConciseDateFormatter, MonthLocator

    locator = MonthLocator(interval=max(1, math.ceil(months / 8)))
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def lines_figure(months: pd.DatetimeIndex, wide: pd.DataFrame, title: str, colors: dict | None = None):
    """One line of monthly streams per column of ``wide``, labelled in a legend."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    figure, axis = plt.subplots(figsize=(7, 4), layout="constrained")
    for column in wide.columns:
        dashed = column in ("all platforms", "other stores", "other artists")
        axis.plot(months, wide[column], marker="o", ms=3, label=column, ls="--" if dashed else "-",
                  color=(colors or {}).get(column))
    axis.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axis.set_ylabel("streams")
    axis.set_title(title)
    month_axis(axis, len(months))
    if wide.shape[1]:
        axis.legend(fontsize=8, ncol=2 if wide.shape[1] > 4 else 1)
    return figure


def growth_figure(months: pd.DatetimeIndex, growth: pd.Series, source: str):
    """Month-over-month growth of all streams: a bar per month, green up, red down, n/a where undefined."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from matplotlib.ticker import StrMethodFormatter

    figure, axis = plt.subplots(figsize=(7, 3.5), layout="constrained")
    defined = growth.notna().to_numpy()
    up, down = "#2ca02c", "#d62728"
    axis.bar(months[defined], growth[defined], width=20, color=np.where(growth[defined] >= 0, up, down))
    for month in months[~defined][1:]:
        axis.annotate("n/a", (month, 0), ha="center", va="bottom", fontsize=8, color="#7f7f7f")
    axis.axhline(0, color="black", lw=0.8)
    axis.yaxis.set_major_formatter(StrMethodFormatter("{x:+,.0f}%"))
    axis.set_ylabel("growth on the month before")
    axis.set_title(f"Month-over-month growth of all streams ({source})")
    month_axis(axis, len(months))
    axis.legend([Patch(color=up), Patch(color=down)], ["more streams", "fewer streams"], fontsize=8)
    return figure


@experiment(
    "streaming-trends",
    datasets=["dk_bank_details", "tidy_daily_streams"],
    headline=["latest_mom_growth_pct", "latest_month_streams", "best_month_streams", "streams"],
    params={
        "source": Param(str, "statement", "statement: DistroKid statement Quantity by Sale Month; daily: "
                        "tidy_daily_streams Spotify + Apple streams summed by month",
                        choices=("statement", "daily")),
        "top_stores": Param(int, 6, "stores drawn as their own line in the by-store chart, by streams", min=1),
    },
)
def streaming_trends(ctx: RunContext) -> None:
    """Monthly streams by platform, store and artist, with month-over-month growth.

    Sums streams by calendar month over every month from the first to the last one
    with data (a month without data counts 0 streams), by platform group (Spotify,
    Apple, Other), by store and, from the statement, by artist (an artist spelled
    several ways, by case or spacing, is one, under its most common spelling). The
    statement is summed by month, store and artist in DuckDB, never loaded whole.
    """
    import pandas as pd

    source, top_stores = ctx.params["source"], ctx.params["top_stores"]
    data, days = load_streams(ctx, source)
    dataset = "dk_bank_details" if source == "statement" else "tidy_daily_streams"
    data["platform"] = platform_group(data["store"])

    months = pd.date_range(data["month"].min(), data["month"].max(), freq="MS") if len(data) else \
        pd.DatetimeIndex([], name="month")
    by_platform = monthly(data, "platform", months)
    by_store = monthly(data, "store", months)
    totals = by_store.sum(axis=1).astype("int64")
    growth = growth_pct(totals.astype("float64"))

    total_table = pd.DataFrame({"month": months.strftime("%Y-%m"), "streams": totals.to_numpy(),
                                "mom_growth_pct": growth.to_numpy()})
    if days is not None:
        total_table["days_with_data"] = days.reindex(months, fill_value=0).to_numpy()
        total_table["days_in_month"] = months.days_in_month
    ctx.log_table(total_table, "monthly_totals")
    ctx.log_table(long_table(by_platform), "monthly_by_platform")
    ctx.log_table(long_table(by_store), "monthly_by_store")
    by_artist = monthly(data, "artist", months) if source == "statement" else None
    if by_artist is not None:
        ctx.log_table(long_table(by_artist), "monthly_by_artist")

    ctx.log_metrics({"streams": int(totals.sum()), "months_covered": len(months),
                     "months_without_streams": int(totals.eq(0).sum())})
    ctx.log_metrics({f"{group.lower()}_streams": int(by_platform[group].sum()) for group in by_platform.columns})
    if len(months) == 0:
        for name in ("latest_month_streams", "latest_mom_growth_pct", "best_month_streams"):
            ctx.skip_metric(name, f"no streams in {dataset}")
    else:
        latest = months[-1]
        ctx.log_metric("latest_month_streams", int(totals.iloc[-1]))
        if len(months) < 2:
            ctx.skip_metric("latest_mom_growth_pct", f"only one month of data ({latest:%Y-%m})")
        elif totals.iloc[-2] == 0:
            ctx.skip_metric("latest_mom_growth_pct", f"no streams in {months[-2]:%Y-%m}, the month before "
                                                     f"{latest:%Y-%m}: growth from 0 is undefined")
        else:
            ctx.log_metric("latest_mom_growth_pct", float(growth.iloc[-1]))
        ctx.set_tag("best_month", f"{totals.idxmax():%Y-%m}")
        ctx.log_metric("best_month_streams", int(totals.max()))

    import matplotlib  # after the query: while DuckDB reads, the other thread is loading MLflow

    matplotlib.use("Agg")

    figures = {"monthly_streams": "Monthly streams by platform", "monthly_growth": "Month-over-month growth",
               "monthly_streams_top_stores": "Monthly streams by store"}
    by_platform_chart = by_platform.assign(**{"all platforms": totals})
    ctx.log_figure(lines_figure(months, by_platform_chart, f"Monthly streams by platform ({source})",
                                colors={**COLORS, "all platforms": "black"}), "monthly_streams")
    ctx.log_figure(growth_figure(months, growth, source), "monthly_growth")
    ctx.log_figure(lines_figure(months, top_and_rest(by_store, top_stores, "other stores"),
                                f"Monthly streams by store (top {min(top_stores, by_store.shape[1])})"),
                   "monthly_streams_top_stores")
    if by_artist is not None:
        ctx.log_figure(lines_figure(months, top_and_rest(by_artist, TOP_ARTISTS, "other artists"),
                                    f"Monthly streams by artist (top {min(TOP_ARTISTS, by_artist.shape[1])})"),
                       "monthly_streams_by_artist")
        figures["monthly_streams_by_artist"] = "Monthly streams by artist"

    origin = "DistroKid statement, by Sale Month" if source == "statement" else "tidy_daily_streams, Spotify + Apple"
    shown_growth = total_table["mom_growth_pct"].map(lambda g: "n/a" if pd.isna(g) else f"{g:+.1f} %")
    lines = [f"## Monthly streams ({origin})", "", "| month | streams | MoM growth |", "|---|---:|---:|"]
    lines += [f"| {month} | {streams:,} | {growth_text} |"
              for month, streams, growth_text in zip(total_table["month"], total_table["streams"], shown_growth)]
    lines += ["", f"{int(totals.sum()):,} streams over {len(months)} months: "
              + ", ".join(f"{g} {int(by_platform[g].sum()):,}" for g in by_platform.columns) + "."
              + (f" The best month was {totals.idxmax():%Y-%m}, with {int(totals.max()):,} streams." if len(months) else "")]
    notes = []
    empty = months[totals.eq(0).to_numpy()]
    if len(empty):
        notes.append(f"Months without streams, counted as 0: {', '.join(empty.strftime('%Y-%m'))}.")
    if source == "statement":
        notes.append("Statements report a sale month 1-3 months late, so the latest months are likely "
                     "incomplete and their growth understated.")
        if by_artist is not None and by_artist.shape[1]:
            notes.append("By artist: " + ", ".join(f"{a} {int(by_artist[a].sum()):,}" for a in by_artist.columns)
                         + " streams.")
    elif len(months):
        partial = total_table[total_table["days_with_data"] < total_table["days_in_month"]]
        if len(partial):
            notes.append(f"Months with fewer days of data than calendar days: {', '.join(partial['month'])}.")
        notes.append("The daily data has no artist column, so there is no by-artist breakdown.")
    notes += [f"`{name}` not computed: {reason}." for name, reason in ctx.skipped.items()]
    lines += ["", "**Notes.**", "", *(f"- {note}" for note in notes)]
    lines += ["", *(f"![{title}](figures/{name}.png)" for name, title in figures.items())]
    ctx.report("\n".join(lines))


@hookimpl
def register_experiments(register):
    register(streaming_trends)
