"""The invented acts, tracks and campaigns every sample file is drawn from, and the hand-kept track catalog."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SNAPSHOT_TS = "20250701_120000"
ADS_WINDOW = ("2025-01-01", "2025-05-31")


@dataclass(frozen=True)
class _Act:
    name: str
    slug: str
    handle: str
    spotify_id: str
    listeners: float
    tiktok_views: float


ACTS = (
    _Act("NOVA VANTA", "nova_vanta", "novavanta", "3Xk9PqL2vN8wRt5YbZ1mCd", 900.0, 1400.0),
    _Act("GLASS ORCHID", "glass_orchid", "glassorchid", "6hT4sWq0JeM7uAa2FgK9rV", 600.0, 2100.0),
)


@dataclass(frozen=True)
class _Track:
    artist: str
    title: str
    isrc: str
    upc: str
    released: str
    release_type: str
    share: float
    popularity: float
    #: (artist, title) as the hand-kept catalog spells them, when not exactly as DistroKid does
    catalog_as: tuple[str, str] | None = None
    in_catalog: bool = True


TRACKS = (
    _Track("GLASS ORCHID", "GARDEN OF WIRES", "QZGO72400311", "196871440312", "2024-10-11", "album", 100, 1.6),
    _Track("GLASS ORCHID", "GHOST FREQUENCY (feat. NOVA VANTA)", "QZGO72500512", "196871550514",
           "2025-05-30", "single", 90, 1.2),
    _Track("GLASS ORCHID", "IVORY STATIC (feat. KAI MERIDIAN)", "QZGO72400207", "196871330209",
           "2024-05-17", "single", 75, 1.0),
    _Track("GLASS ORCHID", "MIRROR FEVER (feat. SABLE ECHO)", "QZGO72400313", "196871440312",
           "2024-10-11", "album", 40, 1.1),
    _Track("GLASS ORCHID", "PAPER SATELLITES", "QZGO72300104", "196871110105", "2023-06-02", "single", 100, 2.2,
           ("glass orchid", "Paper Satellites")),
    _Track("GLASS ORCHID", "SLOW BLOOM", "QZGO72300155", "196871220153", "2023-12-01", "single", 100, 0.9,
           (" GLASS ORCHID", "SLOW BLOOM ")),
    _Track("GLASS ORCHID", "SOFT MACHINERY", "QZGO72400314", "196871440312", "2024-10-11", "album", 100, 0.8),
    _Track("GLASS ORCHID", "SUNDIAL", "QZGO72500421", "196871500426", "2025-03-21", "single", 100, 1.5),
    _Track("NOVA VANTA", "AFTERGLOW CIRCUIT", "QZNV52400102", "196871300101", "2024-03-08", "ep", 100, 1.3),
    _Track("NOVA VANTA", "CHROME LULLABY", "QZNV52400101", "196871300101", "2024-03-08", "ep", 100, 1.0),
    _Track("NOVA VANTA", "HOLLOW SKYLINE (feat. GLASS ORCHID)", "QZNV52500233", "196871500235",
           "2025-02-14", "single", 50, 1.7),
    _Track("NOVA VANTA", "LOW TIDE SIGNAL", "QZNV52300418", "196871220412", "2023-11-10", "single", 100, 0.7),
    _Track("NOVA VANTA", "MIDNIGHT ENGINE", "QZNV52300309", "196871110303", "2023-09-15", "single", 100, 2.4,
           ("Nova Vanta", "Midnight Engine")),
    _Track("NOVA VANTA", "NEON PILGRIM (feat. LUMEN ROW)", "QZNV52400103", "196871300101", "2024-03-08", "ep",
           60, 0.9),
    _Track("NOVA VANTA", "PALE ORBIT", "QZNV52300110", "196871000107", "2023-05-05", "single", 100, 0.6,
           in_catalog=False),
    _Track("NOVA VANTA", "STATIC HEARTS", "QZNV52400540", "196871440549", "2024-09-20", "single", 100, 1.4),
    _Track("NOVA VANTA", "VELVET DYNAMO", "QZNV52500301", "196871550309", "2025-04-25", "single", 100, 1.3),
)  # fmt: skip


@dataclass(frozen=True)
class _Campaign:
    artist: str
    track: str
    targeting: str
    first: str
    last: str
    budget: float

    @property
    def name(self) -> str:
        return f"{self.artist} - {self.track} - {self.targeting}"


CAMPAIGNS = (
    _Campaign("NOVA VANTA", "STATIC HEARTS", "BROAD", "2025-01-06", "2025-02-09", 5),
    _Campaign("GLASS ORCHID", "GARDEN OF WIRES", "INDIE POP", "2025-01-13", "2025-02-28", 5),
    _Campaign("GLASS ORCHID", "MIRROR FEVER", "ALT R&B", "2025-02-01", "2025-03-15", 4),
    _Campaign("NOVA VANTA", "HOLLOW SKYLINE", "BROAD SPOTIFY", "2025-02-14", "2025-03-31", 7),
    _Campaign("NOVA VANTA", "HOLLOW SKYLINE", "BROAD SPOTIFY - Copy", "2025-03-10", "2025-04-20", 5),
    _Campaign("GLASS ORCHID", "SUNDIAL", "DREAM POP", "2025-03-21", "2025-05-31", 4),
    _Campaign("NOVA VANTA", "VELVET DYNAMO", "SYNTHWAVE", "2025-04-25", "2025-05-31", 6),
    _Campaign("GLASS ORCHID", "GHOST FREQUENCY", "BROAD", "2025-05-19", "2025-05-31", 10),
)


def random_stream(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per file, so skipping one file never changes another."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def catalog_rows() -> tuple[Sequence[str], list[list[str]]]:
    """The hand-kept track catalog: every track but one, a few spelled unlike DistroKid, shares as agreed."""
    header = (
        "artist",
        "title",
        "your_revenue_share",
        "isrc",
        "upc",
        "release_date",
        "release_type",
        "royalty_percentage",
    )
    rows = []
    for track in sorted(TRACKS, key=lambda t: (t.released, t.title)):
        if not track.in_catalog:
            continue
        artist, title = track.catalog_as or (track.artist, track.title)
        share = f"{track.share:g}"
        # the hand-kept file lacks a release date for one old single
        released = "" if track.title == "LOW TIDE SIGNAL" else track.released
        rows.append([artist, title, share, track.isrc, track.upc, released, track.release_type, share])
    return header, rows
