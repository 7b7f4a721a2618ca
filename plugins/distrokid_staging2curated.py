"""The lake's DistroKid cleaner (``distrokid_staging2curated.py``) as a tracked experiment.

Reads the DistroKid files in 3_staging/ and logs the two curated data sets the
cleaner writes, as run outputs ready to be registered and promoted:

- ``dk_bank_details``: the royalty statement, a byte copy of staging (same
  columns in the same order, every value as written in staging; dates in the
  lake's ``YYYY-MM-DD`` / ``YYYY-MM`` form);
- ``tidy_daily_streams``: the daily streams with ``source = "distrokid"`` and
  ``combined_streams = spotify_streams + apple_streams``, merged with the other
  distributors' rows of the current curated file, which it leaves untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bedrot_lab import DatasetError, Param, experiment, hookimpl

if TYPE_CHECKING:
    import pandas as pd

    from bedrot_lab import RunContext

__version__ = "1.0.0"

SOURCE = "distrokid"
STREAM_COUNTS = ["spotify_streams", "apple_streams"]
TIDY_COLUMNS = ["date", "spotify_streams", "apple_streams", "combined_streams", "source"]
KEY = ["source", "date"]


def tidy_streams(staging: pd.DataFrame, others: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The DistroKid rows of ``tidy_daily_streams`` from the staging frame, merged with
    ``others`` (rows of other sources, kept as they are).

    Missing counts become 0; counts are rounded to whole numbers; ``combined_streams``
    is recomputed. Sorted distrokid first, then by source and date. Duplicate
    (source, date) rows are kept, counted, and left for the contract to refuse.
    Returns the frame (dates as ``YYYY-MM-DD`` text) and counts for metrics.
    """
    import pandas as pd

    own = staging.copy()
    filled = int(own[STREAM_COUNTS].isna().sum().sum())
    own[STREAM_COUNTS] = own[STREAM_COUNTS].fillna(0).round().astype("int64")
    combined = own["spotify_streams"] + own["apple_streams"]
    fixed = int((own["combined_streams"] != combined).sum()) if "combined_streams" in own else 0
    own["combined_streams"] = combined
    own["source"] = SOURCE
    own["date"] = own["date"].dt.strftime("%Y-%m-%d")
    own = own[TIDY_COLUMNS]

    kept = 0
    if others is not None and len(others):
        others = others[others["source"] != SOURCE].copy()
        kept = len(others)
        others["date"] = others["date"].dt.strftime("%Y-%m-%d")
        for column in ("spotify_streams", "apple_streams", "combined_streams"):
            others[column] = others[column].astype("int64")
        merged = pd.concat([own, others[TIDY_COLUMNS]], ignore_index=True)
    else:
        merged = own.reset_index(drop=True)
    order = merged["source"].ne(SOURCE).astype(int)
    merged = (merged.assign(_first=order)
              .sort_values(["_first", "source", "date"], kind="mergesort")
              .drop(columns="_first")
              .reset_index(drop=True))
    counts = {
        "filled": filled,
        "combined_fixed": fixed,
        "kept": kept,
        "duplicates": int(merged.duplicated(KEY).sum()),
    }
    return merged, counts


def bank_details_text(text: pd.DataFrame, typed: pd.DataFrame) -> pd.DataFrame:
    """The statement ``text`` (every value as the text staging holds, so that the CSV
    written from it is a byte copy) with the date columns in the lake's form
    (``YYYY-MM-DD``, ``YYYY-MM``), from the typed frame ``typed`` of the same file."""
    if len(text) != len(typed):
        raise ValueError(f"read {len(text)} rows as text but {len(typed)} typed; is a line broken?")
    text["Reporting Date"] = typed["Reporting Date"].dt.strftime("%Y-%m-%d").to_numpy()
    text["Sale Month"] = typed["Sale Month"].dt.strftime("%Y-%m").to_numpy()
    return text


def _span(values: pd.Series, fmt: str) -> tuple[str, str]:
    if values.empty or values.isna().all():
        return "", ""
    return values.min().strftime(fmt), values.max().strftime(fmt)


@experiment(
    "distrokid-staging2curated",
    datasets=["dk_bank_details_staging", "daily_streams_distrokid", "tidy_daily_streams"],
    headline=["bank_rows_out", "streams_rows_out", "streams_duplicate_keys", "bank_byte_copy"],
    params={
        "keep_other_sources": Param(bool, True, "keep the other distributors' rows of the current curated "
                                                "tidy_daily_streams (the cleaner replaces only its own rows)"),
    },
)
def distrokid_staging2curated(ctx: RunContext) -> None:
    """DistroKid staging to curated: the royalty statement and the daily streams.

    As the lake's cleaner does: dk_bank_details is a byte copy of the staging
    statement; tidy_daily_streams gets the staging daily streams with source
    "distrokid" and combined = Spotify + Apple, replacing only the DistroKid rows
    of the current curated file. Both are logged as outputs for promotion.
    """
    # -- the royalty statement: validated as declared, copied as written
    statement = ctx.load("dk_bank_details_staging")
    bank = bank_details_text(ctx.load_text("dk_bank_details_staging"), statement)
    bank_record = ctx.log_output(bank, "dk_bank_details", format="csv")
    byte_copy = bank_record["sha256"] == ctx.inputs["dk_bank_details_staging"]
    months = _span(statement["Sale Month"], "%Y-%m")
    reported = _span(statement["Reporting Date"], "%Y-%m-%d")

    # -- the daily streams, with the other distributors' rows of the current curated file
    staging = ctx.load("daily_streams_distrokid")
    others = None
    if ctx.params["keep_other_sources"]:
        try:
            ctx.lab.dataset("tidy_daily_streams").locate(ctx.settings)
        except DatasetError:
            ctx.log.info("no curated tidy_daily_streams yet: only DistroKid rows")
        else:
            others = ctx.load("tidy_daily_streams")
    tidy, counts = tidy_streams(staging, others)
    ctx.log_output(tidy, "tidy_daily_streams", format="csv")

    sources = sorted(set(tidy["source"]) - {SOURCE})
    own = tidy[tidy["source"] == SOURCE]
    first, last = (own["date"].min(), own["date"].max()) if len(own) else ("", "")
    ctx.log_metrics({
        "bank_rows_in": len(statement),
        "bank_rows_out": bank_record["rows"],
        "bank_byte_copy": int(byte_copy),
        "streams_rows_in": len(staging),
        "streams_rows_out": len(tidy),
        "streams_rows_kept": counts["kept"],
        "sources_kept": len(sources),
        "streams_days": own["date"].nunique(),
        "streams_filled_zero": counts["filled"],
        "streams_combined_fixed": counts["combined_fixed"],
        "streams_duplicate_keys": counts["duplicates"],
    })
    ctx.set_tag("streams.date_range", f"{first}..{last}")
    ctx.set_tag("streams.sources_kept", ", ".join(sources) or "none")
    ctx.set_tag("bank.sale_months", f"{months[0]}..{months[1]}")
    ctx.set_tag("bank.reporting_dates", f"{reported[0]}..{reported[1]}")

    warnings = []
    if not byte_copy:
        warnings.append("- dk_bank_details is **not** a byte copy of staging (its dates were rewritten "
                        "to YYYY-MM-DD / YYYY-MM, or its quoting or line ends differ).")
    if counts["duplicates"]:
        warnings.append(f"- tidy_daily_streams has **{counts['duplicates']} duplicate (source, date) rows**; "
                        "its contract will refuse the promotion.")
    if counts["filled"]:
        warnings.append(f"- {counts['filled']} missing stream counts were set to 0.")
    if counts["combined_fixed"]:
        warnings.append(f"- {counts['combined_fixed']} staging rows had a combined_streams other than "
                        "spotify + apple; it was recomputed.")
    ctx.report(
        "## DistroKid staging to curated\n\n"
        "| output | rows in | rows out | range |\n|---|---:|---:|---|\n"
        f"| dk_bank_details | {len(statement):,} | {bank_record['rows']:,} | sale months {months[0]} to {months[1]} |\n"
        f"| tidy_daily_streams | {len(staging):,} | {len(tidy):,} | DistroKid days {first} to {last} |\n\n"
        f"Other sources kept as they were: {', '.join(sources) or 'none'} ({counts['kept']:,} rows)."
        + ("\n\n" + "\n".join(warnings) if warnings else "\n\nNo problems found.")
    )


@hookimpl
def register_experiments(register):
    register(distrokid_staging2curated)
