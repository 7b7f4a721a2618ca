"""Track and artist identity: one normalised key for matching and grouping, shown by its most common spelling."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: between the artist and the title in a track key; never in a name
SEPARATOR = "\x1f"


def name_key(names: pd.Series) -> pd.Series:
    """The identity of each name: Unicode NFKC, upper case, every run of whitespace one
    space, none at the ends nor next to punctuation. ``glass /gamma`` and ``GLASS/GAMMA``
    share a key; ``NIGHT DRIVE`` and ``NIGHTDRIVE`` do not. A missing name is ``""``.

    Normalised once per distinct name, so a long statement costs a lookup per row.
    """
    import pandas as pd

    codes, distinct = pd.factorize(names, use_na_sentinel=False)
    # Python's re, not pyarrow's RE2: \w and \s must know letters and spaces beyond ASCII
    keys = (pd.Series(distinct, dtype=pd.StringDtype("python")).fillna("")
            .str.normalize("NFKC").str.upper()
            .str.replace(r"\s+", " ", regex=True)
            .str.replace(r" ?([^\w ]) ?", r"\1", regex=True)
            .str.strip())
    return pd.Series(keys.to_numpy()[codes], index=names.index, dtype="string")


def track_key(artist: pd.Series, title: pd.Series) -> pd.Series:
    """The identity of a track: the :func:`name_key` of its artist and of its title."""
    return name_key(artist) + SEPARATOR + name_key(title)


def canonical_spellings(frame: pd.DataFrame, *, artist: str = "Artist", title: str | None = "Title") -> pd.DataFrame:
    """``frame`` with every artist and title spelled the way most rows of the same key spell
    it (a tie goes to the spelling that sorts first), so grouping on the columns groups on
    the keys. A title's key is its track's: the same title by two artists stays two tracks.
    ``title=None`` respells the artists only.
    """
    out = frame.copy()
    artists = name_key(frame[artist])
    out[artist] = _most_common(frame[artist], artists)
    if title is not None:
        out[title] = _most_common(frame[title], artists + SEPARATOR + name_key(frame[title]))
    return out


def _most_common(spellings: pd.Series, keys: pd.Series) -> pd.Series:
    import pandas as pd

    counts = pd.DataFrame({"key": keys.to_numpy(), "spelling": spellings.to_numpy()}).value_counts(
        dropna=False).rename("rows").reset_index()
    best = counts.sort_values(["key", "rows", "spelling"], ascending=[True, False, True], kind="stable")
    chosen = best.drop_duplicates("key").set_index("key")["spelling"]
    return pd.Series(keys.map(chosen).to_numpy(), index=spellings.index, dtype=spellings.dtype)
