"""The day-by-day activity behind the small sample files (ads, audiences, streams, Linktree, TikTok)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .catalog import ACTS, ADS_WINDOW, CAMPAIGNS, SNAPSHOT_TS, random_stream

if TYPE_CHECKING:
    from .catalog import _Campaign

DAYS = np.arange("2024-07-01", "2025-07-01", dtype="datetime64[D]")

RANKINGS = (
    "Average",
    "Above average",
    "Below average - Bottom 35% of ads",
    "Below average - Bottom 20% of ads",
    "-",
)
AD_VARIANTS = ("9x16 video", "1x1 static", "4x5 video", "carousel")

META_EXPORT_TO_STAGING = {
    "Reporting starts": "date_start",
    "Reporting ends": "date_end",
    "Ad name": "ad_name",
    "Ad delivery": "ad_delivery_status",
    "Ad Set Name": "adset_name",
    "Bid": "bid",
    "Bid type": "bid_type",
    "Ad set budget": "adset_budget",
    "Ad set budget type": "budget_type",
    "Last significant edit": "last_edit",
    "Attribution setting": "attribution_setting",
    "Results": "results",
    "Result indicator": "result_indicator",
    "Reach": "reach",
    "Impressions": "impressions",
    "Cost per results": "cost_per_result",
    "Quality ranking": "quality_ranking",
    "Engagement rate ranking": "engagement_ranking",
    "Conversion rate ranking": "conversion_ranking",
    "Amount spent (USD)": "spend_usd",
    "Ends": "campaign_end_status",
}
#: columns of the staged export: the export's in snake_case, and the CPM staging derives
STAGING_ADS_HEADER = (*META_EXPORT_TO_STAGING.values(), "cpm")


class Activity:
    """The day-by-day model behind the small files, each drawn from its own random stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @cached_property
    def campaign_days(self) -> list[dict[str, Any]]:
        """One record per campaign and day of delivery, sorted by date then campaign."""
        rng = random_stream(self.seed, "campaigns")
        records = []
        for campaign in CAMPAIGNS:
            campaign_id = "1202" + "".join(str(d) for d in rng.integers(0, 10, 14))
            for day in np.arange(campaign.first, np.datetime64(campaign.last) + 1, dtype="datetime64[D]"):
                spend = round(campaign.budget * rng.uniform(0.7, 1.0), 2)
                impressions = int(spend / rng.uniform(5.0, 11.0) * 1000)
                clicks = int(rng.binomial(impressions, rng.uniform(0.008, 0.025)))
                reach = float(int(impressions / rng.uniform(1.05, 1.5)))
                views = int(rng.binomial(clicks, 0.35))
                carts = int(rng.binomial(views, 0.05))
                pixel = {
                    "ViewContent": views,
                    "AddToCart": carts,
                    "Purchase": int(rng.binomial(carts, 0.3)),
                    "LinkClick": clicks,
                    "PostEngagement": int(rng.binomial(impressions, 0.002)),
                }
                records.append(
                    {
                        "date": str(day),
                        "campaign": campaign,
                        "campaign_id": campaign_id,
                        "spend": spend,
                        "impressions": impressions,
                        "clicks": clicks,
                        "reach": reach,
                        "cpc": round(spend / clicks, 6) if clicks else 0.0,
                        "pixel": {k: v for k, v in pixel.items() if v} if rng.random() > 0.05 else {},
                    }
                )
        records.sort(key=lambda r: (r["date"], r["campaign_id"]))
        return records

    @cached_property
    def days_by_campaign(self) -> dict[_Campaign, list[dict[str, Any]]]:
        """:attr:`campaign_days` of each campaign, in date order."""
        days: dict[_Campaign, list[dict[str, Any]]] = {campaign: [] for campaign in CAMPAIGNS}
        for record in self.campaign_days:
            days[record["campaign"]].append(record)
        return days

    def spend_by_act(self) -> dict[str, np.ndarray]:
        """Daily ad spend per act over :data:`DAYS`."""
        spend = {act.name: np.zeros(len(DAYS)) for act in ACTS}
        for record in self.campaign_days:
            index = int((np.datetime64(record["date"]) - DAYS[0]).astype(np.int64))
            spend[record["campaign"].artist][index] += record["spend"]
        return spend

    def campaign_summary(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "campaign_id",
            "campaign_name",
            "first_seen_date",
            "last_seen_date",
            "total_spend_usd",
            "total_impressions",
            "total_clicks",
            "max_daily_reach",
            "is_currently_active",
            "data_source",
            "api_version",
            "avg_cpc",
            "avg_ctr",
            "total_days_active",
        )
        rows = []
        for campaign in CAMPAIGNS:
            days = self.days_by_campaign[campaign]
            spend = round(sum(r["spend"] for r in days), 2)
            impressions = sum(r["impressions"] for r in days)
            clicks = sum(r["clicks"] for r in days)
            first, last = days[0]["date"], days[-1]["date"]
            active = last == ADS_WINDOW[1]
            rows.append(
                [
                    days[0]["campaign_id"],
                    campaign.name,
                    first,
                    last,
                    _num(spend, 2),
                    impressions,
                    clicks,
                    _num(max(r["reach"] for r in days), 1),
                    "true" if active else "false",
                    "meta_daily_campaigns_extractor",
                    "v18.0",
                    _num(spend / clicks if clicks else 0.0, 4),
                    _num(clicks / impressions * 100 if impressions else 0.0, 3),
                    len(days),
                ]
            )
        return header, rows

    def performance_log(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "date",
            "campaign_id",
            "campaign_name",
            "reach",
            "cpc",
            "spend_usd",
            "impressions",
            "clicks",
            "meta_pixel_events",
        )
        newest = max(np.datetime64(r["date"]) for r in self.campaign_days)
        since = str(newest - 28)
        rows = [
            [
                r["date"],
                r["campaign_id"],
                r["campaign"].name,
                _num(r["reach"], 1),
                _num(r["cpc"], 6),
                _num(r["spend"], 2),
                r["impressions"],
                r["clicks"],
                json.dumps(r["pixel"]),
            ]
            for r in self.campaign_days
            if r["date"] >= since
        ]
        return header, rows

    @cached_property
    def ads(self) -> list[list[Any]]:
        """Rows of the Ads Manager export: each campaign's totals split over its ads."""
        return next(self.ad_copies(1))

    def ad_copies(self, copies: int) -> Iterator[list[list[Any]]]:
        """The export's rows, then ``copies - 1`` copies of every campaign's ad sets, one copy at a time.

        A copy's ad sets are named as Meta names a duplicated ad set (``<ad set> - Copy 2``
        ...) and get ads of their own, drawn as the first's and spending as much; ads are
        numbered on across copies, so (ad set, ad) stays unique. The first copy is the
        export itself, whatever ``copies``.
        """
        rng = random_stream(self.seed, "ads_export")
        number = 0
        for copy in range(1, copies + 1):
            rows: list[list[Any]] = []
            for campaign in CAMPAIGNS:
                rows += self._campaign_ads(rng, campaign, number + len(rows), copy)
            number += len(rows)
            yield rows

    def _campaign_ads(self, rng: np.random.Generator, campaign: _Campaign, number: int, copy: int) -> list[list[Any]]:
        """One campaign's ads in ``copy`` of its ad sets, numbered after ``number``: its totals split over them."""
        days = self.days_by_campaign[campaign]
        active = days[-1]["date"] == ADS_WINDOW[1]
        targetings = [campaign.targeting]
        if rng.random() < 0.5:
            targetings.append(str(rng.choice(["BROAD", "LOOKALIKE 1%", "INTEREST STACK"])))
        ads = [(t, int(rng.integers(2, 4))) for t in targetings]
        count = sum(n for _, n in ads)
        split = rng.dirichlet(np.full(count, 2.0))
        spend = np.round(sum(r["spend"] for r in days) * split, 2)
        impressions = np.round(sum(r["impressions"] for r in days) * split).astype(int)
        results = rng.multinomial(sum(r["pixel"].get("ViewContent", 0) for r in days), split)
        budget_type = "Lifetime" if campaign.targeting == "INDIE POP" else "Daily"
        budget = int(campaign.budget * len(days) if budget_type == "Lifetime" else campaign.budget)
        edit = str(np.datetime64(campaign.first) + int(rng.integers(0, len(days))))
        suffix = f" - Copy {copy}" if copy > 1 else ""
        rows: list[list[Any]] = []
        for targeting, n in ads:
            adset = f"{campaign.artist} - {campaign.track} - {targeting}{suffix}"
            for _ in range(n):
                index = len(rows)
                variant = AD_VARIANTS[int(rng.integers(len(AD_VARIANTS)))]
                delivery = "active" if active else "inactive"
                if active and rng.random() < 0.2:
                    delivery = "not_delivering"
                got = int(results[index])
                rankings = [RANKINGS[int(i)] for i in rng.integers(0, len(RANKINGS), 3)]
                if impressions[index] < 500:
                    rankings = ["-", "-", "-"]
                rows.append(
                    [
                        ADS_WINDOW[0],
                        ADS_WINDOW[1],
                        f"{campaign.track} AD{number + index + 1} - {variant}",
                        delivery,
                        adset,
                        0,
                        "ABSOLUTE_OCPM",
                        budget,
                        budget_type,
                        edit if rng.random() < 0.7 else "0",
                        "7-day click, 1-day view, or 1-day engaged-view",
                        got if got else "",
                        "actions:offsite_conversion.fb_pixel_view_content",
                        int(impressions[index] / rng.uniform(1.05, 1.5)),
                        int(impressions[index]),
                        _num(spend[index] / got, 6) if got else "",
                        *rankings,
                        _num(spend[index], 2),
                        "Ongoing" if active else campaign.last,
                    ]
                )
        return rows

    def ads_export(self) -> tuple[Sequence[str], list[list[Any]]]:
        return tuple(META_EXPORT_TO_STAGING), self.ads

    def staged_ad_copies(self, copies: int) -> Iterator[list[list[Any]]]:
        """:meth:`ad_copies` as staged: snake_case columns (:data:`STAGING_ADS_HEADER`), blanks 0, with CPM."""
        columns = list(META_EXPORT_TO_STAGING)
        results, cost, spend, impressions = (
            columns.index(c) for c in ("Results", "Cost per results", "Amount spent (USD)", "Impressions")
        )
        for ads in self.ad_copies(copies):
            rows = []
            for row in ads:
                row = list(row)
                row[results] = row[results] or 0
                row[cost] = row[cost] or 0.0
                cpm = float(row[spend]) / row[impressions] * 1000 if row[impressions] else 0.0
                rows.append([*row, _num(cpm, 4)])
            yield rows

    def audience(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "date",
            "listeners",
            "streams",
            "followers",
            "artist_id",
            "artist_name",
            "extracted_at",
            "processed_at",
            "source_file",
            "data_source",
        )
        rng = random_stream(self.seed, "spotify_audience")
        spend = self.spend_by_act()
        rows = []
        decay = 0.93 ** np.arange(60)
        for act in ACTS:
            trend = act.listeners * (1 + 0.9 * np.arange(len(DAYS)) / len(DAYS))
            weekly = 1 + 0.07 * np.sin(2 * np.pi * np.arange(len(DAYS)) / 7)
            lift = np.convolve(spend[act.name], decay)[: len(DAYS)] * 9.0
            listeners = np.round(trend * weekly * rng.lognormal(0, 0.06, len(DAYS)) + lift).astype(int)
            streams = np.round(listeners * rng.uniform(1.4, 2.1, len(DAYS))).astype(int)
            followers = 1800 + np.cumsum(rng.poisson(listeners * 0.012))
            source = f"spotify_audience_{act.spotify_id}_{SNAPSHOT_TS}.csv"
            for i, day in enumerate(DAYS):
                rows.append(
                    [
                        str(day),
                        listeners[i],
                        streams[i],
                        followers[i],
                        act.spotify_id,
                        act.slug,
                        "2025-07-01T11:58:03",
                        "2025-07-01T12:00:00",
                        source,
                        "spotify_audience",
                    ]
                )
        return header, rows

    @cached_property
    def streams(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Daily (spotify, apple) streams per distributor."""
        rng = random_stream(self.seed, "daily_streams")
        t = np.arange(len(DAYS)) / len(DAYS)
        result = {}
        for source, spotify_base, apple_share in (("distrokid", 700.0, 0.12), ("toolost", 90.0, 0.2)):
            spotify = np.round(spotify_base * (1 + 0.8 * t) * rng.lognormal(0, 0.18, len(DAYS))).astype(int)
            apple = np.round(spotify * apple_share * rng.lognormal(0, 0.3, len(DAYS))).astype(int)
            apple[rng.random(len(DAYS)) < 0.03] = 0
            result[source] = (spotify, apple)
        return result

    def distrokid_streams(self) -> tuple[Sequence[str], list[list[Any]]]:
        header, rows = self.tidy_streams()
        return header[:-1], [row[:-1] for row in rows if row[-1] == "distrokid"]

    def tidy_streams(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = ("date", "spotify_streams", "apple_streams", "combined_streams", "source")
        rows = []
        for source in ("distrokid", "toolost"):
            spotify, apple = self.streams[source]
            for i, day in enumerate(DAYS):
                rows.append([str(day), spotify[i], apple[i], spotify[i] + apple[i], source])
        return header, rows

    def linktree(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = ("date", "totalViews", "uniqueViews", "totalClicks", "uniqueClicks", "clickThroughRate")
        rng = random_stream(self.seed, "linktree")
        spend = sum(self.spend_by_act().values())
        views = rng.poisson(70 * (1 + 0.5 * np.arange(len(DAYS)) / len(DAYS)) + spend * 6)
        views[rng.random(len(DAYS)) < 0.01] = 0
        unique_views = rng.binomial(views, 0.8)
        clicks = rng.binomial(views, 0.45)
        unique_clicks = rng.binomial(clicks, 0.85)
        rows = [
            [
                str(day),
                views[i],
                unique_views[i],
                clicks[i],
                unique_clicks[i],
                _num(clicks[i] / views[i] if views[i] else 0.0, 4),
            ]
            for i, day in enumerate(DAYS)
        ]
        return header, rows

    def tiktok(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "artist",
            "zone",
            "date",
            "Video Views",
            "Profile Views",
            "Likes",
            "Comments",
            "Shares",
            "Year",
            "engagement_rate",
            "Followers",
            "new_followers",
        )
        rng = random_stream(self.seed, "tiktok")
        rows = []
        for act in ACTS:
            views = np.round(act.tiktok_views * rng.lognormal(0, 0.8, len(DAYS))).astype(int)
            views[rng.random(len(DAYS)) < 0.02] = 0
            profile = rng.binomial(views, 0.03)
            likes = rng.binomial(views, 0.06)
            comments = rng.binomial(views, 0.004)
            shares = rng.binomial(views, 0.005)
            # one follower count per 28-day export, applied to each of its rows
            exports = np.arange(len(DAYS)) // 28
            snapshots = 3000 + np.cumsum(rng.integers(-20, 400, exports.max() + 1))
            followers = snapshots[exports]
            gained = np.maximum(np.diff(followers, prepend=followers[0]), 0)
            for i, day in enumerate(DAYS):
                engagement = (likes[i] + comments[i] + shares[i]) / (views[i] or 1)
                rows.append(
                    [
                        act.handle,
                        act.handle,
                        str(day),
                        views[i],
                        profile[i],
                        likes[i],
                        comments[i],
                        shares[i],
                        str(day)[:4],
                        _num(engagement, 4),
                        followers[i],
                        gained[i],
                    ]
                )
        return header, rows


def _num(value: float, places: int) -> str:
    return repr(round(float(value), places))
