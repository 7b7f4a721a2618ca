"""Grouping DistroKid stores into platforms: Spotify, Apple (Apple Music and iTunes), Other."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: platform -> regex matched (case-insensitively) against the store name
PLATFORM_PATTERNS = {"Spotify": "spotify", "Apple": "apple|itunes"}
PLATFORMS = (*PLATFORM_PATTERNS, "Other")
COLORS = {"Spotify": "#1db954", "Apple": "#fa243c", "Other": "#7f7f7f"}


def platform_group(stores: pd.Series) -> pd.Series:
    """The platform of each store name, by substring (vectorised)."""
    import numpy as np
    import pandas as pd

    lowered = stores.astype("string").str.lower()
    conditions = [lowered.str.contains(pattern, regex=True).fillna(False).to_numpy(dtype=bool)
                  for pattern in PLATFORM_PATTERNS.values()]
    return pd.Series(np.select(conditions, list(PLATFORM_PATTERNS), "Other"), index=stores.index, name="platform")
