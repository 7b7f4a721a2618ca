"""Revenue per stream by platform, from the DistroKid royalty statement."""

from __future__ import annotations

from bedrot_lab import Param, experiment, hookimpl
from bedrot_lab.analysis.platforms import COLORS, platform_group

__version__ = "1.0.0"

SUMS = ["Quantity", "Earnings (USD)"]


def per_stream(frame):
    """Streams, gross earnings and earnings per stream for each row of a grouped sum."""
    out = frame.rename(columns={"Quantity": "streams", "Earnings (USD)": "earnings_usd"})
    streams = out["streams"].where(out["streams"] > 0)
    out["earnings_per_stream"] = out["earnings_usd"] / streams
    out["earnings_per_1000_streams"] = out["earnings_per_stream"] * 1000
    return out


@experiment(
    "revenue-per-stream",
    datasets=["dk_bank_details"],
    headline=["revenue_per_stream_usd", "revenue_per_stream_spotify_usd", "revenue_per_stream_apple_usd",
              "revenue_per_stream_other_usd"],
    params={
        "min_streams": Param(int, 0, "leave stores with fewer streams out of the by-store table and chart", min=0),
        "chart_top": Param(int, 12, "stores shown in the bar chart, by streams", min=1),
    },
)
def revenue_per_stream(ctx):
    """Revenue per stream by platform: Spotify against Apple against the rest.

    Sums streams (Quantity) and gross earnings (Earnings (USD)) by store from the
    DistroKid statement (in DuckDB, never loading it whole), divides them, and groups
    stores into Spotify, Apple (Apple Music and iTunes) and Other. Stores with as many
    streams are listed by name.
    """
    store_sums = ctx.aggregate("dk_bank_details", by=["Store"], sums=SUMS)
    by_store = per_stream(store_sums).sort_values(["streams", "Store"], ascending=[False, True], ignore_index=True)
    by_store["platform"] = platform_group(by_store["Store"])
    by_group = per_stream(by_store.rename(columns={"streams": "Quantity", "earnings_usd": "Earnings (USD)"})
                          .groupby("platform", as_index=False)[SUMS].sum())

    streams = int(store_sums["Quantity"].sum())
    revenue = float(store_sums["Earnings (USD)"].sum())
    ctx.log_metrics({"streams": streams, "gross_revenue_usd": revenue, "stores": len(by_store)})
    if streams > 0:
        ctx.log_metric("revenue_per_stream_usd", revenue / streams)
    else:
        ctx.skip_metric("revenue_per_stream_usd", "the statement has no streams")
    for row in by_group.itertuples():
        name = f"revenue_per_stream_{row.platform.lower()}_usd"
        if row.streams > 0:
            ctx.log_metric(name, row.earnings_per_stream)
        else:
            ctx.skip_metric(name, f"no {row.platform} streams")

    shown = by_store[by_store["streams"] >= ctx.params["min_streams"]]
    ctx.log_metric("stores_shown", len(shown))  # what min_streams changes: a sweep over it draws this
    ctx.log_table(shown, "by_store")
    ctx.log_table(by_group, "by_platform")

    import matplotlib  # after the query: while DuckDB reads, the other thread is loading MLflow

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import StrMethodFormatter

    chart = shown.head(ctx.params["chart_top"]).dropna(subset=["earnings_per_1000_streams"])[::-1]
    figure, axis = plt.subplots(figsize=(7, 1.1 + 0.32 * max(len(chart), 3)), layout="constrained")
    axis.barh(chart["Store"], chart["earnings_per_1000_streams"], color=[COLORS[p] for p in chart["platform"]])
    axis.xaxis.set_major_formatter(StrMethodFormatter("${x:,.2f}"))
    axis.set_xlabel("revenue per 1,000 streams (USD)")
    axis.set_title(f"Revenue per 1,000 streams, top {len(chart)} stores by streams")
    platforms = [p for p in COLORS if p in set(chart["platform"])]
    if platforms:
        figure.legend([Patch(color=COLORS[p]) for p in platforms], platforms, loc="outside lower center",
                      ncol=len(platforms), frameon=False)
    ctx.log_figure(figure, "revenue_per_1000_streams")

    lines = ["| platform | streams | revenue (USD) | USD per 1,000 streams |", "|---|---:|---:|---:|"]
    lines += [f"| {r.platform} | {r.streams:,} | {r.earnings_usd:,.2f} | {r.earnings_per_1000_streams:.3f} |"
              for r in by_group.itertuples()]
    ctx.report("## Revenue per stream by platform\n\n" + "\n".join(lines) +
               f"\n\n{streams:,} streams earned {revenue:,.2f} USD in all.\n\n"
               "![Revenue per 1,000 streams by store](figures/revenue_per_1000_streams.png)")


@hookimpl
def register_experiments(register):
    register(revenue_per_stream)
