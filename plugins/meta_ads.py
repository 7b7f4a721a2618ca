"""Meta Ads performance from the Ads Manager export, and its return against royalty revenue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bedrot_lab import Param, experiment, hookimpl

if TYPE_CHECKING:
    import pandas as pd

    from bedrot_lab import RunContext

__version__ = "1.0.0"

SPEND, IMPRESSIONS, REACH, RESULTS = "Amount spent (USD)", "Impressions", "Reach", "Results"
COUNTS = (SPEND, IMPRESSIONS, REACH, RESULTS)
EXPORT_COLUMNS = ["Reporting starts", "Reporting ends", "Ad name", "Ad Set Name", *COUNTS]
#: the statement is summed per these columns: revenue, sale months and tracks are the same as over its rows
STATEMENT_KEYS = ["Sale Month", "Artist", "Title"]
CREATIVE_CODE = r"(AD\d+)"
UNKNOWN = "unknown"


def campaign_label(adset_names: pd.Series) -> pd.Series:
    """The campaign of each ad: its ad set name up to the first " - ", stripped.

    Ad sets are named ``<CAMPAIGN LABEL> - <TARGETING>``; splitting on " - " rather
    than on any "-" keeps hyphenated labels (``LO-FI``) whole. A name without " - "
    is its own campaign; an empty one is "unknown".
    """
    label = adset_names.str.split(" - ", n=1).str[0].str.strip()
    return label.mask(label.isna() | label.eq(""), UNKNOWN)


def creative_code(ad_names: pd.Series) -> pd.Series:
    """The first ``AD<n>`` code in each ad name, or "unknown"."""
    return ad_names.str.extract(CREATIVE_CODE, expand=False).fillna(UNKNOWN)


def ratio(numerator: pd.Series, denominator: pd.Series, scale: float = 1.0) -> pd.Series:
    """``numerator / denominator * scale``, NaN (never inf) where the denominator is not positive."""
    return numerator / denominator.where(denominator > 0) * scale


def performance(ads: pd.DataFrame, by: str) -> pd.DataFrame:
    """Spend, impressions, reach, results and ads summed by ``by``, with CPM, cost per result
    and results per USD; sorted by spend."""
    out = ads.groupby(by, as_index=False).agg(
        spend_usd=(SPEND, "sum"), impressions=(IMPRESSIONS, "sum"), reach=(REACH, "sum"),
        results=(RESULTS, "sum"), ads=(SPEND, "size"),
    )
    out["cpm_usd"] = ratio(out["spend_usd"], out["impressions"], 1000.0)
    out["cost_per_result_usd"] = ratio(out["spend_usd"], out["results"])
    out["results_per_usd"] = ratio(out["results"], out["spend_usd"])
    return out.sort_values(["spend_usd", by], ascending=[False, True], ignore_index=True)


def most_effective(table: pd.DataFrame, by: str, top_n: int) -> pd.DataFrame:
    """The ``top_n`` rows by results per USD (ties by spend); undefined ones and "unknown" left out."""
    ranked = table[table["results_per_usd"].notna() & table[by].ne(UNKNOWN)]
    return ranked.sort_values(["results_per_usd", "spend_usd"], ascending=False, ignore_index=True).head(top_n)


def check_not_negative(frame: pd.DataFrame, columns: tuple[str, ...], where: str) -> None:
    """Raise naming the file, the column and the first row when a count or amount is negative."""
    negative = frame[list(columns)].lt(0)
    if negative.to_numpy().any():
        column = negative.any().idxmax()
        row = int(negative[column].to_numpy().argmax())
        raise ValueError(f"{where}: column {column!r} should be 0 or more, but data row {row + 1} "
                         f"has {frame[column].iloc[row]:g}")


def log_ratio(ctx: RunContext, name: str, numerator: float, denominator: float, reason: str,
              scale: float = 1.0) -> None:
    """Log ``numerator / denominator * scale``, or skip ``name`` with ``reason`` when the denominator is 0."""
    if denominator > 0:
        ctx.log_metric(name, numerator / denominator * scale)
    else:
        ctx.skip_metric(name, reason)


@experiment(
    "meta-ads",
    datasets=["meta_ads_export", "dk_bank_details", "track_catalog"],
    headline=["roi_royalty_adjusted_pct", "roi_gross_pct", "cost_per_result_usd", "ad_spend_usd"],
    params={
        "top_n": Param(int, 5, "campaigns and creatives shown in the most-effective lists", min=1),
        "default_share": Param(float, 100.0, "percent of earnings kept for tracks missing from the catalog",
                               min=0, max=100),
        "revenue_window": Param(str, "all", "revenue counted for ROI: the whole statement, or only the sale "
                                "months overlapping the export's reporting window", choices=("all", "campaign")),
    },
)
def meta_ads(ctx: RunContext) -> None:
    """Meta Ads performance by campaign and creative, with ROI and ROAS against royalties.

    Reads the newest Ads Manager "Ads" export (one row per ad, totals over the
    reporting window): totals, CPM, cost per result, a breakdown by campaign (ad set
    name before the first " - ") and by creative (the AD<n> code in the ad name),
    then ROI and ROAS against gross DistroKid earnings and against the earnings the
    label keeps after royalty splits. The statement is summed per sale month, artist
    and title in DuckDB, never loaded whole.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import StrMethodFormatter

    from bedrot_lab.analysis.royalties import ACTUAL_COLUMN, apply_shares
    from bedrot_lab.analysis.tracks import canonical_spellings

    params = ctx.params
    ads = ctx.load("meta_ads_export", columns=EXPORT_COLUMNS)
    export_path = ctx.dataset_path("meta_ads_export")
    blanks = int(ads[list(COUNTS)].isna().to_numpy().sum())
    ads[list(COUNTS)] = ads[list(COUNTS)].fillna(0)
    ads[[IMPRESSIONS, REACH]] = ads[[IMPRESSIONS, REACH]].astype("int64")
    check_not_negative(ads, COUNTS, str(export_path))
    ads["campaign"] = campaign_label(ads["Ad Set Name"])
    ads["creative"] = creative_code(ads["Ad name"])

    spend, impressions = float(ads[SPEND].sum()), float(ads[IMPRESSIONS].sum())
    reach, results = float(ads[REACH].sum()), float(ads[RESULTS].sum())
    campaigns, creatives = performance(ads, "campaign"), performance(ads, "creative")
    adsets = performance(ads.rename(columns={"Ad Set Name": "ad_set"}), "ad_set")
    ctx.log_metrics({
        "ad_spend_usd": spend, "impressions": int(impressions), "reach": int(reach),
        "results": round(results), "ads": len(ads), "campaigns": len(campaigns),
        "creatives": int(creatives["creative"].ne(UNKNOWN).sum()),
    })
    log_ratio(ctx, "cpm_usd", spend, impressions, "the export has no impressions", 1000.0)
    log_ratio(ctx, "cost_per_result_usd", spend, results, "the export has no results")
    log_ratio(ctx, "results_per_usd", results, spend, "the export has no spend")

    catalog = ctx.load("track_catalog", columns=["artist", "title", "your_revenue_share"])
    statement = ctx.aggregate("dk_bank_details", by=STATEMENT_KEYS, sums=["Earnings (USD)"], rows="rows")
    statement = apply_shares(canonical_spellings(statement, rows="rows"), catalog,
                             default_share=params["default_share"])
    starts, ends = ads["Reporting starts"].min(), ads["Reporting ends"].max()
    window_text = "" if pd.isna(starts) or pd.isna(ends) else f"{starts:%Y-%m-%d} to {ends:%Y-%m-%d}"
    revenue_scope = "the whole statement"
    if params["revenue_window"] == "campaign":
        if not window_text:
            statement = statement.iloc[0:0]
        else:
            first_month = starts.to_period("M").to_timestamp()
            statement = statement[statement["Sale Month"].ge(first_month) & statement["Sale Month"].le(ends)]
        revenue_scope = f"sale months overlapping {window_text or 'no reporting window'}"

    gross, kept = float(statement["Earnings (USD)"].sum()), float(statement[ACTUAL_COLUMN].sum())
    missing = statement.loc[~statement["in_catalog"], ["Artist", "Title"]].drop_duplicates().sort_values(
        ["Artist", "Title"])
    months = int(statement["Sale Month"].nunique())
    returns = {}
    revenue_names = ("gross_revenue_usd", "royalty_adjusted_revenue_usd", "revenue_months",
                     "roi_gross_pct", "roas_gross_ratio", "roi_royalty_adjusted_pct", "roas_royalty_adjusted_ratio")
    if params["revenue_window"] == "campaign" and not window_text:
        for name in revenue_names:
            ctx.skip_metric(name, "the export gives no reporting window to match sale months against")
    else:
        ctx.log_metrics({"gross_revenue_usd": gross, "royalty_adjusted_revenue_usd": kept, "revenue_months": months})
        for label, revenue in (("gross", gross), ("royalty_adjusted", kept)):
            if spend > 0:
                returns[label] = ((revenue - spend) / spend * 100.0, revenue / spend)
                ctx.log_metrics({f"roi_{label}_pct": returns[label][0], f"roas_{label}_ratio": returns[label][1]})
            else:
                ctx.skip_metric(f"roi_{label}_pct", "no ad spend to return on")
                ctx.skip_metric(f"roas_{label}_ratio", "no ad spend to return on")
    ctx.log_metric("tracks_not_in_catalog", len(missing))

    top_campaigns = most_effective(campaigns, "campaign", params["top_n"])
    top_creatives = most_effective(creatives, "creative", params["top_n"])
    ctx.log_table(campaigns, "campaigns")
    ctx.log_table(creatives, "creatives")
    ctx.log_table(adsets, "ad_sets")
    ctx.log_table(top_campaigns, "top_campaigns")
    ctx.log_table(top_creatives, "top_creatives")
    ads_out = ads.rename(columns={SPEND: "spend_usd"})[["Ad name", "campaign", "creative", "spend_usd",
                                                       IMPRESSIONS, REACH, RESULTS]]
    ctx.log_table(ads_out, "ads")

    shown = campaigns.head(12)[::-1]
    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.32 * max(len(shown), 3)), layout="constrained")
    names = shown["campaign"].where(shown["campaign"].str.len() <= 30, shown["campaign"].str.slice(0, 29) + "…")
    axis.barh(range(len(shown)), shown["spend_usd"], color="#1877f2")
    axis.set_yticks(range(len(shown)), names)
    for y, (value, cpr) in enumerate(zip(shown["spend_usd"], shown["cost_per_result_usd"])):
        axis.annotate("no results" if pd.isna(cpr) else f"${cpr:,.2f} per result", (value, y),
                      xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    axis.xaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
    axis.set_xlabel("spend (USD)")
    axis.set_title(f"Spend by campaign{' (top 12)' if len(campaigns) > 12 else ''}, labelled with cost per result",
                   fontsize=10)
    axis.margins(x=0.3)
    ctx.log_figure(figure, "spend_by_campaign")

    chart = top_creatives[::-1]
    figure, axis = plt.subplots(figsize=(6, 1.2 + 0.32 * max(len(chart), 3)), layout="constrained")
    axis.barh(chart["creative"], chart["results_per_usd"], color="#42b72a")
    axis.set_xlabel("results per USD spent")
    axis.set_title(f"Top {len(chart)} creatives by results per USD")
    ctx.log_figure(figure, "top_creatives")

    figure, axis = plt.subplots(figsize=(6, 4), layout="constrained")
    bars = axis.bar(["ad spend", "gross revenue", "royalty-adjusted\nrevenue"], [spend, gross, kept],
                    color=["#1877f2", "#7f7f7f", "#2ca02c"])
    axis.bar_label(bars, fmt="${:,.2f}")
    axis.yaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
    axis.set_ylabel("USD")
    axis.margins(y=0.12)
    axis.set_title(f"Ad spend against revenue\n({revenue_scope})", fontsize=10)
    ctx.log_figure(figure, "spend_vs_revenue")

    def money(value: float) -> str:
        return "n/a" if pd.isna(value) else f"{value:,.2f}"

    lines = [
        f"## Meta Ads: {export_path.name}",
        (f"Reporting window {window_text or 'not given'}: {len(ads):,} ads in {len(campaigns)} campaigns spent "
         f"{spend:,.2f} USD for {impressions:,.0f} impressions, {reach:,.0f} reach (summed over ads, so an "
         f"upper bound of unique reach) and {results:,.0f} results."),
        "",
        "| campaign | ads | spend (USD) | impressions | results | CPM (USD) | cost per result (USD) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.campaign} | {r.ads} | {r.spend_usd:,.2f} | {r.impressions:,.0f} | {r.results:,.0f} | "
              f"{money(r.cpm_usd)} | {money(r.cost_per_result_usd)} |" for r in campaigns.itertuples()]
    lines += ["", "![Spend by campaign, labelled with cost per result](figures/spend_by_campaign.png)"]
    lines += ["", f"### Most effective creatives (results per USD, top {params['top_n']})", "",
              "| creative | ads | spend (USD) | results | results per USD |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.creative} | {r.ads} | {r.spend_usd:,.2f} | {r.results:,.0f} | {r.results_per_usd:.3f} |"
              for r in top_creatives.itertuples()]
    lines += ["", "![Top creatives by results per USD](figures/top_creatives.png)"]
    lines += ["", f"### Return on ad spend ({revenue_scope}, {months} sale months)", "",
              "| revenue | USD | ROI | ROAS |", "|---|---:|---:|---:|"]
    for label, title, revenue in (("gross", "gross", gross), ("royalty_adjusted", "after royalty splits", kept)):
        roi, roas = returns.get(label, (float("nan"), float("nan")))
        shown_roi = "n/a" if pd.isna(roi) else f"{roi:,.1f} %"
        lines.append(f"| {title} | {revenue:,.2f} | {shown_roi} | {money(roas)} |")
    lines += ["", "![Ad spend against revenue](figures/spend_vs_revenue.png)"]
    notes = []
    if blanks:
        notes.append(f"{blanks} blank spend, impression, reach or result cells were counted as 0.")
    unknown = int(ads["creative"].eq(UNKNOWN).sum())
    if unknown:
        notes.append(f"{unknown} ads have no AD<n> code in their name; they are grouped as 'unknown' "
                     "and left out of the rankings.")
    if len(missing):
        names = ", ".join(f"{a} / {t}" for a, t in missing.head(5).itertuples(index=False))
        notes.append(f"Tracks missing from the catalog ({len(missing)}), counted at {params['default_share']:g} % "
                     f"of their earnings: {names}{' ...' if len(missing) > 5 else ''}.")
    notes += [f"`{name}` not computed: {reason}." for name, reason in ctx.skipped.items()]
    if notes:
        lines += ["", "**Notes.**", "", *(f"- {note}" for note in notes)]
    ctx.report("\n".join(lines))


@hookimpl
def register_experiments(register):
    register(meta_ads)
