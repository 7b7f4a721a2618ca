"""Business metrics of the label: what ads cost per listener against what the catalog earns."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bedrot_lab import Param, experiment, hookimpl
from bedrot_lab.analysis.platforms import COLORS, PLATFORMS, platform_group
from bedrot_lab.analysis.royalties import ACTUAL_COLUMN, SHARE_COLUMN, apply_shares
from bedrot_lab.analysis.tracks import canonical_spellings

if TYPE_CHECKING:
    import pandas as pd

__version__ = "1.0.0"

#: the earnings every revenue metric is computed on: gross, or the label's share after splits
EARNINGS = "earnings_usd"
GROSS = "gross_usd"
NEW_RELEASE, BACK_CATALOG = "New Release", "Back Catalog"
#: the statement is summed per these columns before anything else: every figure below is a sum,
#: a distinct count or a first and last month of them, so it is the same as over the statement's rows
STATEMENT_KEYS = ["Sale Month", "Store", "Artist", "Title"]

#: every metric the experiment logs (or skips), in report order, with its meaning; revenue is the
#: basis param royalty_adjusted chooses: gross, or the label's share
METRICS = {
    "campaigns": "Meta Ads campaigns",
    "ad_spend_usd": "ad spend, Σ total_spend_usd (USD)",
    "ad_clicks": "ad clicks, Σ total_clicks",
    "cost_per_click_usd": "spend / clicks (USD)",
    "mean_campaign_cost_per_click_usd": "mean of the campaigns' avg_cpc, each campaign weighing the same (USD)",
    "campaign_window_days": "days from the first campaign's start to the last one's end",
    "listener_growth": "max - min of all acts' listeners summed per day, in the campaign window",
    "listeners_per_click_ratio": "listener growth / clicks: new listeners per ad click (may exceed 1)",
    "cpa_usd": "cost per acquired listener, spend / listener growth (USD)",
    "max_listeners": "most listeners on one day, all acts summed, whole timeline",
    "revenue_per_listener_usd": "earnings / max listeners (USD)",
    "ltv_usd": "lifetime value, revenue per listener x retention_months (USD)",
    "roi_pct": "(LTV - CPA) / CPA x 100 (percent)",
    "profit_per_listener_usd": "LTV - CPA (USD)",
    "streams": "streams, Σ Quantity",
    "gross_revenue_usd": "earnings before royalty splits, Σ Earnings (USD)",
    "royalty_adjusted_revenue_usd": "the label's share after royalty splits (USD)",
    "revenue_per_stream_usd": "revenue / streams (USD)",
    "revenue_per_stream_spotify_usd": "Spotify earnings / streams (USD)",
    "revenue_per_stream_apple_usd": "Apple Music and iTunes earnings / streams (USD)",
    "revenue_per_stream_other_usd": "other stores' earnings / streams (USD)",
    "daily_revenue_usd": "earnings / days between the first and last sale month (USD)",
    "daily_ad_spend_usd": "spend / Σ total_days_active, spend per campaign-day (USD)",
    "revenue_per_click_usd": "streams_per_click x revenue per stream (USD)",
    "payback_days": "daily ad spend / daily revenue: days of revenue that pay for one campaign-day",
    "new_release_streams": "streams of sale months within new_release_days of the newest",
    "new_release_revenue_usd": "revenue of those sale months (USD)",
    "back_catalog_streams": "streams of older sale months",
    "back_catalog_revenue_usd": "revenue of older sale months (USD)",
    "tracks": "distinct tracks in the statement (artist and title regardless of case and spacing)",
    "months_without_data": "calendar months between the first and last sale month with no statement rows",
    "royalties_paid_usd": "gross - label share (USD)",
    "retention_rate": "label share / gross",
    "tracks_not_in_catalog": "tracks missing from track_catalog, kept at default_share",
}


@dataclass(frozen=True)
class Missing:
    """A metric that cannot be computed, and why."""

    reason: str


Value = int | float | Missing


def divide(numerator: Value, denominator: Value, reason: str, *, positive: bool = False) -> Value:
    """``numerator / denominator``; a missing operand passes its reason on, a zero
    denominator (or, with ``positive``, one below zero) gives ``Missing(reason)``."""
    for operand in (numerator, denominator):
        if isinstance(operand, Missing):
            return operand
    if denominator == 0 or (positive and denominator < 0):
        return Missing(reason)
    return float(numerator) / float(denominator)


def combine(function: Callable[..., float], *operands: Value) -> Value:
    """``function(*operands)``, or the first missing operand."""
    missing = next((o for o in operands if isinstance(o, Missing)), None)
    return missing if missing is not None else float(function(*operands))


def per_stream(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with earnings per stream (and per 1,000); NaN where there are no streams."""
    streams = frame["streams"].where(frame["streams"] > 0)
    out = frame.assign(earnings_per_stream=frame[EARNINGS] / streams)
    return out.assign(earnings_per_1000_streams=out["earnings_per_stream"] * 1000)


def with_earnings(statement: pd.DataFrame, catalog: pd.DataFrame | None, default_share: float) -> pd.DataFrame:
    """The statement with ``gross_usd`` and ``earnings_usd``: the label's share after
    splits when a catalog is given, else gross. Everything downstream reads ``earnings_usd``."""
    gross = statement["Earnings (USD)"].astype("float64")
    if catalog is None:
        return statement.assign(**{GROSS: gross, EARNINGS: gross})
    shared = apply_shares(statement, catalog, default_share=default_share)
    return shared.assign(**{GROSS: gross.to_numpy(), EARNINGS: shared[ACTUAL_COLUMN]})


def ad_metrics(ads: pd.DataFrame) -> tuple[dict[str, Value], tuple[Any, Any] | Missing]:
    """Meta Ads totals and the campaign window ``(first start, last end)``."""
    import pandas as pd

    spend = float(ads["total_spend_usd"].sum())
    clicks = int(ads["total_clicks"].sum())
    start, end = ads["first_seen_date"].min(), ads["last_seen_date"].max()
    none = Missing("no Meta Ads campaigns")
    window: tuple[Any, Any] | Missing = none if pd.isna(start) or pd.isna(end) else (start, end)
    metrics: dict[str, Value] = {
        "campaigns": len(ads),
        "ad_spend_usd": spend,
        "ad_clicks": clicks,
        "cost_per_click_usd": divide(spend, clicks, "no ad clicks"),
        "mean_campaign_cost_per_click_usd": none if ads["avg_cpc"].count() == 0 else float(ads["avg_cpc"].mean()),
        "campaign_window_days": window if isinstance(window, Missing) else (end - start).days + 1,
        "daily_ad_spend_usd": divide(spend, float(ads["total_days_active"].sum()), "no Meta Ads campaign days"),
    }
    return metrics, window


def listeners_by_date(audience: pd.DataFrame) -> pd.Series:
    """Listeners of all acts together per date: the acts' rows of a day summed."""
    return audience.groupby("date")["listeners"].sum().sort_index()


def listener_growth(listeners: pd.Series, window: tuple[Any, Any] | Missing) -> Value:
    """max - min of the daily listener totals inside the campaign window (both ends included)."""
    if isinstance(window, Missing):
        return window
    start, end = window
    inside = listeners[(listeners.index >= start) & (listeners.index <= end)]
    if inside.empty:
        return Missing(f"no audience rows in the campaign window {start:%Y-%m-%d} to {end:%Y-%m-%d}")
    return int(inside.max() - inside.min())


def monthly(statement: pd.DataFrame) -> pd.DataFrame:
    """Streams and earnings per sale month, every calendar month from the first to the
    last present; a month without statement rows has 0 and ``has_data`` False."""
    import pandas as pd

    sums = statement.groupby("Sale Month")[["Quantity", EARNINGS]].sum()
    if not sums.empty:
        months = pd.date_range(sums.index.min(), sums.index.max(), freq="MS")
        sums = sums.reindex(months, fill_value=0).assign(has_data=months.isin(statement["Sale Month"]))
    else:
        sums = sums.assign(has_data=pd.Series(dtype=bool))
    sums.index.name = "sale_month"
    return sums.rename(columns={"Quantity": "streams"}).reset_index()


def release_split(statement: pd.DataFrame, new_release_days: int) -> pd.DataFrame:
    """Streams and earnings of New Release (sale month on or after the newest sale month
    minus ``new_release_days``) and Back Catalog (older) rows."""
    import numpy as np
    import pandas as pd

    cutoff = statement["Sale Month"].max() - pd.Timedelta(days=new_release_days)
    kind = np.where(statement["Sale Month"] >= cutoff, NEW_RELEASE, BACK_CATALOG)
    split = statement.groupby(kind)[["Quantity", EARNINGS]].sum().reindex([NEW_RELEASE, BACK_CATALOG], fill_value=0)
    split.index.name = "release_type"
    return split.rename(columns={"Quantity": "streams"}).reset_index()


def track_table(statement: pd.DataFrame, royalty_adjusted: bool) -> pd.DataFrame:
    """Streams, gross and earnings per track (Title, Artist), best earning first; with the
    share kept and whether the catalog lists it when royalty-adjusted."""
    columns = {"streams": ("Quantity", "sum"), GROSS: (GROSS, "sum"), EARNINGS: (EARNINGS, "sum")}
    if royalty_adjusted:
        columns |= {SHARE_COLUMN: (SHARE_COLUMN, "first"), "in_catalog": ("in_catalog", "first")}
    tracks = statement.groupby(["Title", "Artist"], as_index=False).agg(**columns)
    return tracks.sort_values([EARNINGS, "Title", "Artist"], ascending=[False, True, True], ignore_index=True)


def artist_economics(statement: pd.DataFrame) -> pd.DataFrame:
    """Gross, label share (actual), royalties paid and retention per artist."""
    artists = statement.groupby("Artist", as_index=False)[[GROSS, EARNINGS]].sum()
    artists = artists.rename(columns={EARNINGS: "actual_usd"})
    artists["royalties_usd"] = artists[GROSS] - artists["actual_usd"]
    artists["retention_rate"] = artists["actual_usd"] / artists[GROSS].where(artists[GROSS] != 0)
    return artists.sort_values(GROSS, ascending=False, ignore_index=True)


@experiment(
    "business-metrics",
    datasets=["metaads_campaigns_daily", "spotify_audience", "dk_bank_details", "track_catalog"],
    headline=["roi_pct", "cpa_usd", "ltv_usd", "payback_days"],
    params={
        "retention_months": Param(int, 6, "months a new listener keeps earning, for LTV", min=1),
        "streams_per_click": Param(int, 50, "streams one ad click is assumed to bring, for revenue per click",
                                   min=0),
        "new_release_days": Param(int, 90, "sale months within this many days of the newest are New Release",
                                  min=0),
        "top_n": Param(int, 10, "tracks in the top-tracks table and chart", min=1),
        "royalty_adjusted": Param(bool, False, "compute everything on the label's share after royalty splits "
                                  "(reads track_catalog)"),
        "default_share": Param(float, 100.0, "percent the label keeps of a track missing from the catalog "
                               "(royalty_adjusted only)", min=0, max=100),
    },
)
def business_metrics(ctx):
    """Business metrics: ad cost per acquired listener against listener value, and where revenue comes from.

    Meta Ads totals, listener growth during the campaigns, CPA, LTV, ROI, revenue
    per stream by platform, payback, back catalog against new releases and top
    tracks. A track spelled several ways (case, spacing) counts once, under its
    most common spelling. With royalty_adjusted, every revenue figure is the label's share
    after the track catalog's splits (track_catalog is read only then). The statement is
    summed per sale month, store, artist and title in DuckDB, never loaded whole.
    """
    params = ctx.params
    adjusted = params["royalty_adjusted"]
    ads = ctx.load("metaads_campaigns_daily", columns=[
        "first_seen_date", "last_seen_date", "total_spend_usd", "total_clicks", "avg_cpc", "total_days_active"])
    audience = ctx.load("spotify_audience", columns=["date", "listeners", "artist_name"])
    statement = ctx.aggregate("dk_bank_details", by=STATEMENT_KEYS, sums=["Quantity", "Earnings (USD)"], rows="rows")
    catalog = ctx.load("track_catalog", columns=["artist", "title", "your_revenue_share"]) if adjusted else None
    statement = with_earnings(canonical_spellings(statement, rows="rows"), catalog, params["default_share"])

    metrics, window = ad_metrics(ads)
    listeners = listeners_by_date(audience)
    growth = listener_growth(listeners, window)
    spend, clicks = metrics["ad_spend_usd"], metrics["ad_clicks"]
    earnings = float(statement[EARNINGS].sum())
    streams = int(statement["Quantity"].sum())
    max_listeners: Value = Missing("the audience timeline is empty") if listeners.empty else int(listeners.max())
    cpa = divide(spend, growth, "no listener growth in the campaign window")
    per_listener = divide(earnings, max_listeners, "the audience timeline has no listeners")
    ltv = combine(lambda r: r * params["retention_months"], per_listener)
    revenue_per_stream = divide(earnings, streams, "the statement has no streams")
    metrics |= {
        "listener_growth": growth,
        "listeners_per_click_ratio": divide(growth, clicks, "no ad clicks"),
        "cpa_usd": cpa,
        "max_listeners": max_listeners,
        "revenue_per_listener_usd": per_listener,
        "ltv_usd": ltv,
        "roi_pct": combine(lambda r: r * 100, divide(combine(lambda a, b: a - b, ltv, cpa), cpa,
                                                    "CPA is 0 (no ad spend)")),
        "profit_per_listener_usd": combine(lambda a, b: a - b, ltv, cpa),
        "streams": streams,
        "gross_revenue_usd": float(statement[GROSS].sum()),
        **({"royalty_adjusted_revenue_usd": earnings} if adjusted else {}),
        "revenue_per_stream_usd": revenue_per_stream,
    }

    by_store = statement.groupby("Store", as_index=False).agg(
        streams=("Quantity", "sum"), **{EARNINGS: (EARNINGS, "sum")})
    by_store = per_stream(by_store.assign(platform=platform_group(by_store["Store"]).to_numpy()))
    by_store = by_store.sort_values(["streams", "Store"], ascending=[False, True], ignore_index=True)
    by_platform = per_stream(by_store.groupby("platform")[["streams", EARNINGS]].sum()
                             .reindex(list(PLATFORMS), fill_value=0).rename_axis("platform").reset_index())
    for row in by_platform.itertuples():
        metrics[f"revenue_per_stream_{row.platform.lower()}_usd"] = divide(
            float(row.earnings_usd), float(row.streams), f"no {row.platform} streams")

    months = statement["Sale Month"]
    span_days: Value = Missing("the statement has no sale months") if months.count() == 0 else float(
        (months.max() - months.min()).days)
    daily_revenue = divide(earnings, span_days,
                           "the statement covers a single sale month (0 days between the first and last)")
    metrics |= {
        "daily_revenue_usd": daily_revenue,
        "revenue_per_click_usd": combine(lambda r: r * params["streams_per_click"], revenue_per_stream),
        "payback_days": divide(metrics["daily_ad_spend_usd"], daily_revenue, "revenue per day is not positive",
                               positive=True),
    }

    by_month = monthly(statement)
    by_release = release_split(statement, params["new_release_days"])
    releases = by_release.set_index("release_type")
    tracks = track_table(statement, adjusted)
    metrics |= {
        "new_release_streams": int(releases.loc[NEW_RELEASE, "streams"]),
        "new_release_revenue_usd": float(releases.loc[NEW_RELEASE, EARNINGS]),
        "back_catalog_streams": int(releases.loc[BACK_CATALOG, "streams"]),
        "back_catalog_revenue_usd": float(releases.loc[BACK_CATALOG, EARNINGS]),
        "tracks": len(tracks),
        "months_without_data": int((~by_month["has_data"]).sum()),
    }
    artists = None
    if adjusted:
        gross = metrics["gross_revenue_usd"]
        artists = artist_economics(statement)
        metrics |= {
            "royalties_paid_usd": gross - earnings,
            "retention_rate": divide(earnings, gross, "no gross earnings"),
            "tracks_not_in_catalog": int((~tracks["in_catalog"].astype(bool)).sum()),
        }

    ctx.log_metrics({name: value for name, value in metrics.items() if not isinstance(value, Missing)})
    for name, value in metrics.items():
        if isinstance(value, Missing):
            ctx.skip_metric(name, value.reason)

    top = tracks.head(params["top_n"])
    ctx.log_table(by_store, "revenue_per_stream_by_store")
    ctx.log_table(by_platform, "revenue_per_stream_by_platform")
    ctx.log_table(by_month, "monthly")
    ctx.log_table(by_release, "back_catalog_vs_new_releases")
    ctx.log_table(top, "top_tracks")
    if artists is not None:
        ctx.log_table(artists, "artist_economics")
        ctx.log_table(tracks, "track_shares")

    for name, figure in figures(listeners, window, by_platform, by_month, top, adjusted).items():
        ctx.log_figure(figure, name)
    ctx.report(report(metrics, by_platform, by_release, top, artists, tracks, params))


#: each figure's artifact name and title, in report order
FIGURES = {
    "listeners": "Spotify listeners and the campaign window",
    "revenue_per_1000_streams": "Revenue per 1,000 streams by platform",
    "monthly_revenue": "Revenue per sale month",
    "top_tracks": "Top tracks by revenue",
}


def figures(listeners: pd.Series, window: tuple[Any, Any] | Missing, by_platform: pd.DataFrame,
            by_month: pd.DataFrame, top: pd.DataFrame, adjusted: bool) -> dict[str, Any]:
    """The run's charts by artifact name (see :data:`FIGURES`): listeners with the campaign
    window, revenue per 1,000 streams by platform, revenue per sale month, top tracks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, MonthLocator
    from matplotlib.ticker import StrMethodFormatter

    basis = "after royalty splits" if adjusted else "gross"
    charts = {}

    figure, axis = plt.subplots(figsize=(7, 4), layout="constrained")
    if listeners.empty:
        axis.text(0.5, 0.5, "no audience data", ha="center", va="center", transform=axis.transAxes)
    else:
        axis.plot(listeners.index, listeners.to_numpy(), color="#1db954", label="listeners, all acts")
    if not isinstance(window, Missing):
        axis.axvspan(window[0], window[1], color="#4c72b0", alpha=0.15, label="Meta Ads campaign window")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper left")
    axis.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axis.set_ylabel("listeners per day")
    axis.set_title(FIGURES["listeners"])
    locator = AutoDateLocator(maxticks=8)
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    charts["listeners"] = figure

    figure, axis = plt.subplots(figsize=(6, 3.5), layout="constrained")
    rated = by_platform.dropna(subset=["earnings_per_1000_streams"])
    bars = axis.bar(rated["platform"], rated["earnings_per_1000_streams"], color=[COLORS[p] for p in rated["platform"]])
    axis.bar_label(bars, fmt="${:,.2f}")
    axis.yaxis.set_major_formatter(StrMethodFormatter("${x:,.2f}"))
    axis.set_ylabel(f"USD per 1,000 streams ({basis})")
    axis.set_title(FIGURES["revenue_per_1000_streams"])
    axis.margins(y=0.15)
    charts["revenue_per_1000_streams"] = figure

    figure, axis = plt.subplots(figsize=(7, 3.5), layout="constrained")
    axis.bar(by_month["sale_month"], by_month[EARNINGS], width=20, color="#4c72b0")
    axis.yaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
    axis.set_ylabel(f"revenue ({basis}, USD)")
    axis.set_title(FIGURES["monthly_revenue"])
    locator = MonthLocator(interval=max(1, math.ceil(len(by_month) / 8)))
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    charts["monthly_revenue"] = figure

    figure, axis = plt.subplots(figsize=(7, 0.9 + 0.3 * max(len(top), 3)), layout="constrained")
    title = top["Title"].where(top["Title"].str.len() <= 28, top["Title"].str.slice(0, 27) + "…")
    labels = title + " / " + top["Artist"]
    axis.barh(range(len(top)), top[EARNINGS][::-1], color="#dd8452")
    axis.set_yticks(range(len(top)), labels[::-1])
    axis.xaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
    axis.set_xlabel(f"revenue ({basis}, USD)")
    axis.set_title(f"Top {len(top)} tracks by revenue")
    axis.tick_params(axis="y", labelsize=8)
    charts["top_tracks"] = figure
    return charts


def report(metrics: dict[str, Value], by_platform: pd.DataFrame, by_release: pd.DataFrame, top: pd.DataFrame,
           artists: pd.DataFrame | None, tracks: pd.DataFrame, params: dict[str, Any]) -> str:
    """The run's report section: every metric (or why it is missing) and the main tables."""
    basis = ("the label's share after royalty splits" if params["royalty_adjusted"] else "gross earnings")
    lines = [f"## Business metrics\n\nRevenue figures are {basis}.\n", "| metric | value | meaning |", "|---|---:|---|"]
    order = list(METRICS)
    for name in sorted(metrics, key=order.index):
        value = metrics[name]
        shown = f"skipped: {value.reason}" if isinstance(value, Missing) else f"{value:,.6g}"
        lines.append(f"| `{name}` | {shown} | {METRICS[name]} |")
    lines += ["", "### Listeners", "", figure_link("listeners")]
    lines += ["", "### Revenue per stream by platform", "", figure_link("revenue_per_1000_streams"), "",
              "| platform | streams | earnings (USD) | USD per 1,000 streams |", "|---|---:|---:|---:|"]
    lines += [f"| {r.platform} | {r.streams:,.0f} | {r.earnings_usd:,.2f} | {r.earnings_per_1000_streams:.3f} |"
              for r in by_platform.itertuples()]
    lines += ["", f"### Back catalog against new releases (last {params['new_release_days']} days of sale months)",
              "", "| | streams | earnings (USD) |", "|---|---:|---:|"]
    lines += [f"| {r.release_type} | {r.streams:,.0f} | {r.earnings_usd:,.2f} |" for r in by_release.itertuples()]
    lines += ["", figure_link("monthly_revenue")]
    lines += ["", f"### Top {len(top)} tracks", "", "| title | artist | streams | earnings (USD) |",
              "|---|---|---:|---:|"]
    lines += [f"| {r.Title} | {r.Artist} | {r.streams:,.0f} | {r.earnings_usd:,.2f} |" for r in top.itertuples()]
    lines += ["", figure_link("top_tracks")]
    if artists is not None:
        lines += ["", "### Per-artist economics", "",
                  "| artist | gross (USD) | label share (USD) | royalties (USD) | retention |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r.Artist} | {r.gross_usd:,.2f} | {r.actual_usd:,.2f} | {r.royalties_usd:,.2f} "
                  f"| {r.retention_rate:.1%} |" for r in artists.itertuples()]
        missing = tracks.loc[~tracks["in_catalog"].astype(bool), ["Title", "Artist"]]
        if not missing.empty:
            listed = ", ".join(missing["Title"] + " (" + missing["Artist"] + ")")
            lines += ["", f"Not in the track catalog, kept at {params['default_share']:g}%: {listed}."]
    return "\n".join(lines)


def figure_link(name: str) -> str:
    """A markdown image of figure ``name``, relative to report.md (figures/<name>.png)."""
    return f"![{FIGURES[name]}](figures/{name}.png)"


@hookimpl
def register_experiments(register):
    register(business_metrics)
