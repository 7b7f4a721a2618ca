"""The lake's newer Meta Ads cleaner (``metaads_staging2curated.py``) as a tracked experiment.

Reads ``3_staging/metaads/metaads_staging_latest.csv`` (the Ads Manager export
in snake_case: one row per ad, totals over the reporting window) and logs:

- ``metaads_campaign_summary``: one row per campaign, for
  ``4_curated/metaads/campaign_summary_latest.csv``;
- ``metaads_ad_performance``: one row per ad, for
  ``4_curated/metaads/ad_performance_latest.csv``.

The manual export has no campaign column (the lake's cleaner then writes no
campaign summary at all); the campaign here is the ad set name up to the first
" - ", as the sandbox analyses (and the ``meta-ads`` experiment) take it.
This plugin also contributes the two curated data sets to the catalog, with the
columns, ranges, key and minimum rows that are their contracts at promotion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bedrot_lab import Dataset, Param, experiment, hookimpl

if TYPE_CHECKING:
    import pandas as pd

    from bedrot_lab import RunContext

__version__ = "1.0.0"

UNKNOWN = "unknown"
SUMMARY_COLUMNS = ["campaign_name", "spend_usd", "impressions", "reach", "results", "ads", "cpm", "cost_per_result"]
AD_COLUMNS = ["campaign_name", "adset_name", "ad_name", "spend_usd", "impressions", "reach", "results", "cpm",
              "cost_per_result", "quality_ranking", "engagement_ranking", "conversion_ranking"]
NOT_NEGATIVE = ("spend_usd", "impressions", "reach", "results", "cpm", "cost_per_result")

CAMPAIGN_SUMMARY = Dataset(
    "metaads_campaign_summary",
    "metaads/campaign_summary_latest.csv",
    columns={
        "campaign_name": "string",
        "spend_usd": "float",
        "impressions": "int",
        "reach": "int",
        "results": "int",
        "ads": "int",
        "cpm": "float",
        "cost_per_result": "float",
    },
    ranges={**{c: (0, None) for c in NOT_NEGATIVE}, "ads": (1, None)},
    key=("campaign_name",),
    min_rows=1,
    description="Meta Ads per campaign (ad set name up to the first ' - '): spend, impressions, reach, "
                "results, ads, CPM and cost per result; sorted by spend.",
)
AD_PERFORMANCE = Dataset(
    "metaads_ad_performance",
    "metaads/ad_performance_latest.csv",
    columns={
        "campaign_name": "string",
        "adset_name": "string",
        "ad_name": "string",
        "spend_usd": "float",
        "impressions": "int",
        "reach": "int",
        "results": "int",
        "cpm": "float",
        "cost_per_result": "float",
        "quality_ranking": "string",
        "engagement_ranking": "string",
        "conversion_ranking": "string",
    },
    ranges={c: (0, None) for c in NOT_NEGATIVE},
    key=("adset_name", "ad_name"),
    min_rows=1,
    description="Meta Ads per ad over the reporting window, sorted by spend.",
)


def campaign_label(adset_names: pd.Series, parts: int = 1) -> pd.Series:
    """The campaign of each ad: the first ``parts`` " - "-separated parts of its ad set
    name, stripped; a name with fewer parts is its own campaign; an empty one is "unknown"."""
    label = adset_names.fillna("").str.split(" - ").str[:parts].str.join(" - ").str.strip()
    return label.mask(label.eq(""), UNKNOWN)


def per_mille(spend: pd.Series, impressions: pd.Series, places: int) -> pd.Series:
    """CPM = spend / impressions x 1000, rounded; 0 where there are no impressions (the lake's rule)."""
    return (spend / impressions.where(impressions > 0) * 1000).fillna(0.0).round(places)


def clean_ads(staging: pd.DataFrame, parts: int = 1) -> pd.DataFrame:
    """One row per ad: blank results are 0 (the export leaves them blank), counts whole
    numbers, a blank cost per result 0; with its campaign and CPM; sorted by spend."""
    ads = staging.copy()
    ads["campaign_name"] = campaign_label(ads["adset_name"], parts)
    ads["results"] = ads["results"].fillna(0).round().astype("int64")
    for column in ("impressions", "reach"):
        ads[column] = ads[column].fillna(0).astype("int64")
    ads["spend_usd"] = ads["spend_usd"].fillna(0.0)
    ads["cost_per_result"] = ads["cost_per_result"].fillna(0.0)
    ads["cpm"] = per_mille(ads["spend_usd"], ads["impressions"], 4)
    ads = ads.sort_values(["spend_usd", "ad_name"], ascending=[False, True], kind="mergesort")
    return ads[AD_COLUMNS].reset_index(drop=True)


def campaign_summary(ads: pd.DataFrame) -> pd.DataFrame:
    """Sums of spend, impressions, reach and results and the number of ads per campaign;
    CPM and cost per result (2 dp, 0 when the denominator is 0); sorted by spend."""
    out = ads.groupby("campaign_name", as_index=False).agg(
        spend_usd=("spend_usd", "sum"), impressions=("impressions", "sum"), reach=("reach", "sum"),
        results=("results", "sum"), ads=("ad_name", "size"),
    )
    out["cpm"] = per_mille(out["spend_usd"], out["impressions"], 2)
    out["cost_per_result"] = (out["spend_usd"] / out["results"].where(out["results"] > 0)).fillna(0.0).round(2)
    out["spend_usd"] = out["spend_usd"].round(2)
    out = out.sort_values(["spend_usd", "campaign_name"], ascending=[False, True], kind="mergesort")
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


@experiment(
    "metaads-staging2curated",
    datasets=["metaads_staging"],
    headline=["campaigns_out", "ads_out", "ad_spend_usd", "duplicate_ads"],
    params={
        "campaign_parts": Param(int, 1, 'how many " - "-separated parts of the ad set name name the campaign '
                                        "(1: the sandbox analyses' rule)", min=1),
    },
)
def metaads_staging2curated(ctx: RunContext) -> None:
    """Meta Ads staging to curated: a campaign summary and the per-ad performance.

    From the staged Ads Manager export: per ad, spend, impressions, reach, results,
    CPM and cost per result; per campaign (the ad set name up to the first " - "),
    their sums, the number of ads, CPM and cost per result, sorted by spend.
    Both are logged as CSV outputs for promotion into 4_curated/metaads/.
    """
    staging = ctx.load("metaads_staging")
    ads = clean_ads(staging, ctx.params["campaign_parts"])
    summary = campaign_summary(ads)
    ctx.log_output(summary, "metaads_campaign_summary", format="csv")
    ctx.log_output(ads, "metaads_ad_performance", format="csv")

    spend, impressions, results = float(ads["spend_usd"].sum()), int(ads["impressions"].sum()), int(ads["results"].sum())
    ctx.log_metrics({
        "rows_in": len(staging),
        "ads_out": len(ads),
        "campaigns_out": len(summary),
        "ad_spend_usd": round(spend, 2),
        "impressions": impressions,
        "reach": int(ads["reach"].sum()),
        "results": results,
        "duplicate_ads": int(ads.duplicated(list(AD_PERFORMANCE.key)).sum()),
        "unknown_campaign_ads": int(ads["campaign_name"].eq(UNKNOWN).sum()),
    })
    for name, numerator, denominator, scale in (("cpm_usd", spend, impressions, 1000.0),
                                                ("cost_per_result_usd", spend, results, 1.0)):
        if denominator > 0:
            ctx.log_metric(name, numerator / denominator * scale)
        else:
            ctx.skip_metric(name, f"no {'impressions' if name == 'cpm_usd' else 'results'}")
    window = ""
    if len(staging) and staging["date_start"].notna().any():
        window = f"{staging['date_start'].min():%Y-%m-%d}..{staging['date_end'].max():%Y-%m-%d}"
        ctx.set_tag("metaads.window", window)

    lines = ["| campaign | ads | spend (USD) | impressions | results | CPM | cost per result |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.campaign_name} | {r.ads} | {r.spend_usd:,.2f} | {r.impressions:,} | {r.results:,} | "
              f"{r.cpm:.2f} | {r.cost_per_result:.2f} |" for r in summary.itertuples()]
    ctx.report(
        "## Meta Ads staging to curated\n\n"
        f"{len(staging):,} staged ads (reporting window {window or 'unknown'}) became "
        f"{len(ads):,} rows of ad performance and {len(summary):,} campaigns.\n\n" + "\n".join(lines)
    )


@hookimpl
def register_datasets(register):
    register(CAMPAIGN_SUMMARY)
    register(AD_PERFORMANCE)


@hookimpl
def register_experiments(register):
    register(metaads_staging2curated)
