"""The BEDROT lake's data set catalog, contributed through ``register_datasets`` like any plugin's."""

from __future__ import annotations

from bedrot_lab import hookimpl
from bedrot_lab.lake import Dataset

DK_BANK_COLUMNS = {
    "Reporting Date": "date",
    "Sale Month": "month",
    "Store": "string",
    "Artist": "string",
    "Title": "string",
    "ISRC": "string",
    "UPC": "string",
    "Quantity": "int",
    "Team Percentage": "float",
    "Song/Album": "string",
    "Country of Sale": "string",
    "Songwriter Royalties Withheld": "float",
    "Earnings (USD)": "float",
}

DAILY_STREAMS_COLUMNS = {
    "date": "date",
    "spotify_streams": "int",
    "apple_streams": "int",
    "combined_streams": "int",
}

META_ADS_EXPORT_COLUMNS = {
    "Reporting starts": "date",
    "Reporting ends": "date",
    "Ad name": "string",
    "Ad delivery": "string",
    "Ad Set Name": "string",
    "Bid": "float",
    "Bid type": "string",
    "Ad set budget": "string",
    "Ad set budget type": "string",
    "Last significant edit": "string",
    "Attribution setting": "string",
    "Results": "float",
    "Result indicator": "string",
    "Reach": "int",
    "Impressions": "int",
    "Cost per results": "float",
    "Quality ranking": "string",
    "Engagement rate ranking": "string",
    "Conversion rate ranking": "string",
    "Amount spent (USD)": "float",
    "Ends": "string",
}

CATALOG = (
    Dataset(
        "dk_bank_details",
        "dk_bank_details.csv",
        columns=DK_BANK_COLUMNS,
        description="DistroKid royalty statement: one row per reporting date, sale month, store, track, country.",
    ),
    Dataset(
        "tidy_daily_streams",
        "tidy_daily_streams.csv",
        columns={**DAILY_STREAMS_COLUMNS, "source": "string"},
        description="Daily Spotify and Apple Music streams per distributor (distrokid, toolost).",
    ),
    Dataset(
        "metaads_campaigns_daily",
        "metaads_campaigns_daily.csv",
        columns={
            "campaign_id": "string",
            "campaign_name": "string",
            "first_seen_date": "date",
            "last_seen_date": "date",
            "total_spend_usd": "float",
            "total_impressions": "int",
            "total_clicks": "int",
            "max_daily_reach": "float",
            "is_currently_active": "bool",
            "data_source": "string",
            "api_version": "string",
            "avg_cpc": "float",
            "avg_ctr": "float",
            "total_days_active": "int",
        },
        description="Meta Ads campaign lifetime summary: one row per campaign.",
    ),
    Dataset(
        "metaads_campaigns_performance_log",
        "metaads_campaigns_performance_log.csv",
        columns={
            "date": "date",
            "campaign_id": "string",
            "campaign_name": "string",
            "reach": "float",
            "cpc": "float",
            "spend_usd": "float",
            "impressions": "int",
            "clicks": "int",
            "meta_pixel_events": "string",
        },
        description="Meta Ads daily campaign log, last 28 days.",
    ),
    Dataset(
        "spotify_audience",
        "spotify_audience_curated_*.csv",
        columns={
            "date": "date",
            "listeners": "int",
            "streams": "int",
            "followers": "int",
            "artist_id": "string",
            "artist_name": "string",
        },
        description="Spotify for Artists audience timeline: one row per artist and day (newest file).",
    ),
    Dataset(
        "track_catalog",
        "track_catalog_royalty_splits.csv",
        columns={
            "artist": "string",
            "title": "string",
            "your_revenue_share": "float",
            "isrc": "string",
            "upc": "string",
            "release_date": "date",
            "release_type": "string",
            "royalty_percentage": "float",
        },
        description="Track catalog with royalty splits (your_revenue_share in percent, 0-100).",
    ),
    Dataset(
        "linktree_analytics",
        "linktree_analytics.csv",
        columns={
            "date": "date",
            "totalViews": "int",
            "uniqueViews": "int",
            "totalClicks": "int",
            "uniqueClicks": "int",
            "clickThroughRate": "float",
        },
        description="Linktree account daily analytics.",
    ),
    Dataset(
        "tiktok_analytics",
        "tiktok_analytics_curated_*.csv",
        columns={
            "artist": "string",
            "zone": "string",
            "date": "date",
            "Video Views": "int",
            "Profile Views": "int",
            "Likes": "int",
            "Comments": "int",
            "Shares": "int",
            "Year": "int",
            "engagement_rate": "float",
            "Followers": "int",
            "new_followers": "int",
        },
        description="TikTok account daily analytics per artist (newest file).",
    ),
    Dataset(
        "meta_ads_export",
        "BEDROT-ADS-Ads-*.csv",
        zone="landing",
        columns=META_ADS_EXPORT_COLUMNS,
        description='Meta Ads Manager "Ads" export: one row per ad, totals over the reporting window.',
    ),
    Dataset(
        "dk_bank_details_staging",
        "dk_bank_details.csv",
        zone="staging",
        columns=DK_BANK_COLUMNS,
        description="DistroKid statement in staging, input of the DistroKid cleaner.",
    ),
    Dataset(
        "daily_streams_distrokid",
        "daily_streams_distrokid.csv",
        zone="staging",
        columns=DAILY_STREAMS_COLUMNS,
        description="DistroKid daily streams in staging, input of the DistroKid cleaner.",
    ),
    Dataset(
        "metaads_staging",
        "metaads/metaads_staging_latest.csv",
        zone="staging",
        columns={
            "date_start": "date",
            "date_end": "date",
            "ad_name": "string",
            "adset_name": "string",
            "results": "float",
            "reach": "int",
            "impressions": "int",
            "spend_usd": "float",
            "cost_per_result": "float",
            "quality_ranking": "string",
            "engagement_ranking": "string",
            "conversion_ranking": "string",
        },
        description="Meta Ads export in staging (snake_case columns), input of the Meta Ads cleaner.",
    ),
)


@hookimpl(trylast=True)
def register_datasets(register):
    for dataset in CATALOG:
        register(dataset)
