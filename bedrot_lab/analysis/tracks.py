"""Track and artist identity: one normalised key for matching and grouping, shown by its most common spelling."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
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


def canonical_spellings(frame: pd.DataFrame, *, artist: str = "Artist", title: str | None = "Title",
                        rows: str | None = None) -> pd.DataFrame:
    """``frame`` with every artist and title spelled the way most rows of the same key spell
    it (a tie goes to the spelling that sorts first), so grouping on the columns groups on
    the keys. A title's key is its track's: the same title by two artists stays two tracks.
    ``title=None`` respells the artists only. When each row of ``frame`` stands for several
    rows of the data (a group-by's result), ``rows`` names the column that says how many.

    Counts rows per distinct spelling with integer codes: the strings are normalised and
    compared once each, not once per row.
    """
    import numpy as np
    import pandas as pd

    out = frame.copy()
    weights = None if rows is None else frame[rows].to_numpy(dtype="float64")
    artist_codes, artists = pd.factorize(frame[artist], use_na_sentinel=False)
    artist_keys = name_key(pd.Series(artists)).to_numpy()
    chosen = _most_common(artist_keys, artists, np.bincount(artist_codes, weights, minlength=len(artists)))
    out[artist] = pd.Series(artists.take(chosen[artist_codes]), index=frame.index)
    if title is not None:
        title_codes, titles = pd.factorize(frame[title], use_na_sentinel=False)
        title_keys = name_key(pd.Series(titles)).to_numpy()
        pair_codes, pairs = pd.factorize(artist_codes.astype("int64") * max(len(titles), 1) + title_codes)
        pair_artist, pair_title = np.divmod(pairs, max(len(titles), 1))
        keys = artist_keys[pair_artist] + SEPARATOR + title_keys[pair_title]
        chosen = _most_common(keys, titles.take(pair_title), np.bincount(pair_codes, weights, minlength=len(pairs)))
        out[title] = pd.Series(titles.take(pair_title[chosen[pair_codes]]), index=frame.index)
    return out


def _most_common(keys: np.ndarray, spellings: pd.Index, rows: np.ndarray) -> np.ndarray:
    """For each distinct spelling, the position of the spelling its key is shown as."""
    import pandas as pd

    table = pd.DataFrame({"key": keys, "spelling": spellings.to_numpy(), "rows": rows})
    order = table.sort_values(["key", "rows", "spelling"], ascending=[True, False, True], kind="stable")
    shown = pd.Series(order.index.to_numpy(), index=order["key"].to_numpy())
    return table["key"].map(shown[~shown.index.duplicated()]).to_numpy(dtype="int64")
