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

DK_BANK_RANGES = {"Quantity": (0, None), "Team Percentage": (0, 100), "Songwriter Royalties Withheld": (0, None)}

DAILY_STREAMS_RANGES = {"spotify_streams": (0, None), "apple_streams": (0, None), "combined_streams": (0, None)}

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
        ranges=DK_BANK_RANGES,
        description="DistroKid royalty statement: one row per reporting date, sale month, store, track, country.",
    ),
    Dataset(
        "tidy_daily_streams",
        "tidy_daily_streams.csv",
        columns={**DAILY_STREAMS_COLUMNS, "source": "string"},
        ranges=DAILY_STREAMS_RANGES,
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
        ranges={"total_spend_usd": (0, None), "total_impressions": (0, None), "total_clicks": (0, None),
                "max_daily_reach": (0, None), "avg_cpc": (0, None), "avg_ctr": (0, 100),
                "total_days_active": (1, None)},
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
        ranges={"reach": (0, None), "cpc": (0, None), "spend_usd": (0, None), "impressions": (0, None),
                "clicks": (0, None)},
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
        ranges={"listeners": (0, None), "streams": (0, None), "followers": (0, None)},
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
        ranges={"your_revenue_share": (0, 100), "royalty_percentage": (0, 100)},
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
        ranges={"totalViews": (0, None), "uniqueViews": (0, None), "totalClicks": (0, None),
                "uniqueClicks": (0, None), "clickThroughRate": (0, None)},
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
        ranges={"Video Views": (0, None), "Profile Views": (0, None), "Likes": (0, None), "Comments": (0, None),
                "Shares": (0, None), "engagement_rate": (0, None), "Followers": (0, None)},
        description="TikTok account daily analytics per artist (newest file).",
    ),
    Dataset(
        "meta_ads_export",
        "BEDROT-ADS-Ads-*.csv",
        zone="landing",
        columns=META_ADS_EXPORT_COLUMNS,
        ranges={"Results": (0, None), "Reach": (0, None), "Impressions": (0, None), "Cost per results": (0, None),
                "Amount spent (USD)": (0, None)},
        description='Meta Ads Manager "Ads" export: one row per ad, totals over the reporting window.',
    ),
    Dataset(
        "dk_bank_details_staging",
        "dk_bank_details.csv",
        zone="staging",
        columns=DK_BANK_COLUMNS,
        ranges=DK_BANK_RANGES,
        description="DistroKid statement in staging, input of the DistroKid cleaner.",
    ),
    Dataset(
        "daily_streams_distrokid",
        "daily_streams_distrokid.csv",
        zone="staging",
        columns=DAILY_STREAMS_COLUMNS,
        ranges=DAILY_STREAMS_RANGES,
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
