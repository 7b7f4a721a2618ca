"""One identity for a track (and an artist): the key the splits are matched on is the key tables group on."""

from __future__ import annotations

import pandas as pd
import pytest

from bedrot_lab.analysis.royalties import apply_shares
from bedrot_lab.analysis.tracks import canonical_spellings, name_key, track_key


@pytest.mark.parametrize(("one", "other"), [
    ("GLASS/GAMMA", "glass /gamma"),
    ("GLASS/GAMMA", " Glass / Gamma "),
    ("NIGHT DRIVE", "night  drive"),
    ("NIGHT DRIVE", "NIGHT\tDRIVE\u00a0"),
    ("ECHO PARK (feat. GLASS ORCHID)", "echo park(feat.  glass orchid )"),
    ("ＮＩＧＨＴ DRIVE", "night drive"),  # full-width letters, as some exports have them
])
def test_spellings_of_one_name_share_a_key(one, other):
    keys = name_key(pd.Series([one, other]))
    assert keys[0] == keys[1]


@pytest.mark.parametrize(("one", "other"), [
    ("NIGHT DRIVE", "NIGHTDRIVE"),
    ("NIGHT DRIVE", "NIGHT DRIVE II"),
    ("GLASS/GAMMA", "GLASS GAMMA"),
])
def test_different_names_keep_different_keys(one, other):
    keys = name_key(pd.Series([one, other]))
    assert keys[0] != keys[1]


def test_artist_and_title_stay_apart_in_the_key():
    keys = track_key(pd.Series(["A B", "A"]), pd.Series(["C", "B C"]))
    assert keys[0] != keys[1]


def test_a_missing_name_has_a_key_and_is_not_dropped():
    keys = name_key(pd.Series(["NOVA VANTA", None]))
    assert keys.notna().all() and keys[0] != keys[1]


def test_every_row_takes_the_spelling_most_rows_use():
    frame = pd.DataFrame({
        "Artist": ["GLASS ORCHID", "glass orchid", "GLASS ORCHID", "Glass  Orchid", "NOVA VANTA"],
        "Title": ["GLASS/GAMMA", "glass /gamma", "GLASS/GAMMA", "Sundial", "SUNDIAL"],
        "Quantity": [1, 2, 3, 4, 5],
    })
    out = canonical_spellings(frame)
    assert out["Artist"].tolist() == ["GLASS ORCHID"] * 4 + ["NOVA VANTA"]
    # SUNDIAL by GLASS ORCHID and SUNDIAL by NOVA VANTA are two tracks, each spelled its own way
    assert out["Title"].tolist() == ["GLASS/GAMMA"] * 3 + ["Sundial", "SUNDIAL"]
    assert out["Quantity"].tolist() == [1, 2, 3, 4, 5]
    assert frame["Artist"].tolist()[1] == "glass orchid"  # the input is left as it was


def test_a_tie_goes_to_the_spelling_that_sorts_first():
    frame = pd.DataFrame({"Artist": ["nova vanta", "NOVA VANTA"], "Title": ["x", "X"]})
    assert canonical_spellings(frame)[["Artist", "Title"]].to_numpy().tolist() == [["NOVA VANTA", "X"]] * 2


def test_artists_alone():
    frame = pd.DataFrame({"artist": ["NOVA VANTA", "nova  vanta ", "NOVA VANTA"]})
    assert canonical_spellings(frame, artist="artist", title=None)["artist"].tolist() == ["NOVA VANTA"] * 3


def test_splits_match_on_the_same_key():
    catalog = pd.DataFrame({"artist": ["glass orchid"], "title": ["glass / gamma"], "your_revenue_share": [40.0]})
    statement = pd.DataFrame({"Artist": ["GLASS ORCHID", " Glass  Orchid"], "Title": ["GLASS/GAMMA", "glass /gamma"],
                              "Earnings (USD)": [1.0, 2.0]})
    shared = apply_shares(statement, catalog)
    assert shared["in_catalog"].tolist() == [True, True]
    assert shared["actual_earnings_usd"].tolist() == pytest.approx([0.4, 0.8])


def test_rows_weigh_each_spelling_as_the_rows_it_stands_for():
    # a group-by's result: "NOVA VANTA / X" is 1 group of 3 rows, "nova vanta / x" 2 groups of 1 row each
    grouped = pd.DataFrame({"Artist": ["NOVA VANTA", "nova vanta", "nova vanta"], "Title": ["X", "x", "x"],
                            "Store": ["Spotify", "Spotify", "Deezer"], "rows": [3, 1, 1]})
    out = canonical_spellings(grouped, rows="rows")
    assert out[["Artist", "Title"]].to_numpy().tolist() == [["NOVA VANTA", "X"]] * 3  # 3 rows against 2
    assert canonical_spellings(grouped)["Artist"].tolist() == ["nova vanta"] * 3      # 2 groups against 1
    rows = grouped.loc[grouped.index.repeat(grouped["rows"])].drop(columns="rows")
    assert canonical_spellings(rows)[["Artist", "Title"]].drop_duplicates().to_numpy().tolist() == [["NOVA VANTA", "X"]]
