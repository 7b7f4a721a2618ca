"""Royalty splits: the share of each track's earnings the label keeps, from the track catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .tracks import track_key

if TYPE_CHECKING:
    import pandas as pd

SHARE_COLUMN = "share"  # a fraction, 0..1
ACTUAL_COLUMN = "actual_earnings_usd"


def shares_by_track(catalog: pd.DataFrame) -> pd.Series:
    """``your_revenue_share`` (percent) as a fraction, indexed by :func:`track_key`.

    A track listed twice keeps its last row, as the catalog is maintained by hand
    and later rows are corrections.
    """
    keys = track_key(catalog["artist"], catalog["title"])
    shares = catalog["your_revenue_share"].astype("float64").to_numpy() / 100.0
    import pandas as pd

    series = pd.Series(shares, index=keys.to_numpy(), name=SHARE_COLUMN)
    return series[~series.index.duplicated(keep="last")]


def apply_shares(
    frame: pd.DataFrame,
    catalog: pd.DataFrame,
    *,
    default_share: float = 100.0,
    artist: str = "Artist",
    title: str = "Title",
    earnings: str | None = "Earnings (USD)",
) -> pd.DataFrame:
    """``frame`` with ``share`` (fraction kept), ``in_catalog`` and, unless ``earnings`` is
    None, ``actual_earnings_usd``.

    Vectorised: one lookup per distinct track, never per row. Tracks missing
    from the catalog keep ``default_share`` percent.
    """
    shares = shares_by_track(catalog)
    keys = track_key(frame[artist], frame[title])
    looked_up = keys.map(shares)
    out = frame.copy()
    out["in_catalog"] = looked_up.notna().to_numpy()
    out[SHARE_COLUMN] = looked_up.fillna(default_share / 100.0).astype("float64").to_numpy()
    if earnings is not None:
        out[ACTUAL_COLUMN] = out[earnings].astype("float64") * out[SHARE_COLUMN]
    return out
