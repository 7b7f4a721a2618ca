"""Data quality of any catalog data set: missing values, type violations, duplicates, ranges, outliers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bedrot_lab import Param, ParamError, experiment, hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from bedrot_lab import Dataset

__version__ = "1.0.0"

NUMERIC_KINDS = ("int", "float")
#: what the lake's loader (pyarrow) reads as null in a typed column; in a text column only
#: an empty value counts as missing, since "NA" is also Namibia's country code
NULL_TOKENS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                         "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})
DATE_SHAPES = {"date": (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"), "month": (r"\d{4}-\d{2}", "%Y-%m")}
BOOL_VALUES = {"true": True, "1": True, "false": False, "0": False}
#: the minimum of values the quartiles of the IQR rule are computed from
IQR_MIN_VALUES = 4
CHECKS = ("missing", "type_violations", "out_of_range", "outliers")
RULE_HELP = ("write iqr:<factor> (e.g. iqr:1.5) or '<column> <op> <number>' with op one of > >= < <= "
             "(e.g. 'engagement_rate > 0.5')")

_IQR_RULE = re.compile(r"\s*iqr\s*:\s*(?P<factor>\d+(?:\.\d*)?|\.\d+)\s*", re.IGNORECASE)
_THRESHOLD_RULE = re.compile(
    r"\s*(?P<column>[^<>]*[^<>\s])\s*(?P<op>>=|<=|>|<)\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*"
)
_METRIC_UNSAFE = re.compile(r"[^\w.\- ]+")


@dataclass(frozen=True)
class OutlierRule:
    """``iqr`` with ``factor``, or a ``threshold``: values of ``column`` for which ``op number`` holds."""

    text: str
    kind: str
    factor: float = 1.5
    column: str = ""
    op: str = ""
    number: float = 0.0

    def describe(self) -> str:
        if self.kind == "iqr":
            return f"below Q1 - {self.factor:g}·IQR or above Q3 + {self.factor:g}·IQR"
        return f"{self.column} {self.op} {self.number:g}"


def parse_rule(text: str) -> OutlierRule:
    """The outlier rule of param ``outlier_rule``; :class:`ParamError` naming it if it cannot be read."""
    if match := _IQR_RULE.fullmatch(text):
        return OutlierRule(text, "iqr", factor=float(match["factor"]))
    if match := _THRESHOLD_RULE.fullmatch(text):
        return OutlierRule(text, "threshold", column=match["column"], op=match["op"], number=float(match["number"]))
    raise ParamError(f"param 'outlier_rule': cannot read rule {text!r}; {RULE_HELP}")


def metric_key(column: str) -> str:
    """``column`` as MLflow accepts in a metric name: brackets dropped, other symbols as ``_``."""
    cleaned = _METRIC_UNSAFE.sub("_", re.sub(r"[()\[\]{}]", "", column))
    return " ".join(cleaned.split()).strip("_ ") or "column"


@dataclass
class ColumnCheck:
    """What the checks found in one declared column: a mask of offending rows per check."""

    column: str
    kind: str
    masks: dict[str, pd.Series]
    details: dict[str, str]
    stats: dict[str, Any]


def text_of(values: pd.Series) -> pd.Series:
    """``values`` as stripped text, a missing value as the empty string."""
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def parse_values(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """(missing, parsed): which values are absent, and the values as ``kind`` (NaN/NaT where
    a present value does not parse, which makes it a type violation)."""
    import numpy as np
    import pandas as pd

    if _stored_as(values, kind):
        parsed = values.astype("float64") if kind in NUMERIC_KINDS else values
        if kind == "int":
            parsed = parsed.where(np.isclose(parsed % 1, 0))
        return values.isna(), parsed
    text = text_of(values)
    missing = text.eq("")
    if kind == "string":
        return missing, text
    missing |= text.isin(NULL_TOKENS)
    present = text.where(~missing)
    if kind == "int":
        parsed = pd.to_numeric(present.where(present.str.fullmatch(r"[+-]?\d+").fillna(False).astype(bool)),
                               errors="coerce").astype("float64")
    elif kind == "float":
        parsed = pd.to_numeric(present, errors="coerce").astype("float64")
    elif kind == "bool":
        parsed = present.str.lower().map(BOOL_VALUES)
    elif kind in DATE_SHAPES:
        shape, layout = DATE_SHAPES[kind]
        shaped = present.where(present.str.fullmatch(shape).fillna(False).astype(bool))
        parsed = pd.to_datetime(shaped, format=layout, errors="coerce")
    else:
        parsed = pd.to_datetime(present, format="ISO8601", errors="coerce")
    return missing, parsed


def _stored_as(values: pd.Series, kind: str) -> bool:
    """Whether a (Parquet) column already holds ``kind`` values, which then need no parsing."""
    from pandas.api import types

    if types.is_bool_dtype(values.dtype):
        return kind == "bool"
    if kind in NUMERIC_KINDS:
        return types.is_numeric_dtype(values.dtype)
    return kind in ("date", "month", "datetime") and types.is_datetime64_any_dtype(values.dtype)


def check_column(column: str, values: pd.Series, kind: str, declared_range: tuple[Any, Any] | None,
                 rule: OutlierRule) -> ColumnCheck:
    """Missing values, type violations, values outside the declared range and outliers of one column."""
    missing, parsed = parse_values(values, kind)
    masks = {"missing": missing}
    details = {"missing": "empty" if kind == "string" else "empty or a null marker (NA, NULL, ...)"}
    stats: dict[str, Any] = {}
    if kind != "string":
        masks["type_violations"] = ~missing & parsed.isna()
        details["type_violations"] = f"not a {kind} value"
    if declared_range is not None and kind in NUMERIC_KINDS:
        low, high = declared_range
        below = parsed.lt(low) if low is not None else False
        above = parsed.gt(high) if high is not None else False
        masks["out_of_range"] = parsed.notna() & (below | above)
        details["out_of_range"] = f"outside the declared range [{_end(low)}, {_end(high)}]"
        stats.update(range_low=low, range_high=high)
    if kind in NUMERIC_KINDS and rule.kind == "iqr":
        numbers = parsed.dropna()
        if len(numbers) >= IQR_MIN_VALUES:
            q1, q3 = numbers.quantile([0.25, 0.75])
            low, high = q1 - rule.factor * (q3 - q1), q3 + rule.factor * (q3 - q1)
            masks["outliers"] = parsed.lt(low) | parsed.gt(high)
            details["outliers"] = (f"outside [Q1 - {rule.factor:g}·IQR, Q3 + {rule.factor:g}·IQR] = [{low:.6g}, {high:.6g}]"
                                   + ("; the IQR is 0, so any value other than the typical one counts" if q3 == q1 else ""))
            stats.update(q1=q1, q3=q3, lower_fence=low, upper_fence=high)
        else:
            stats["outliers_skipped"] = (f"the IQR rule needs at least {IQR_MIN_VALUES} numeric values, "
                                         f"column has {len(numbers)}")
    elif rule.kind == "threshold" and column == rule.column:
        compare = {">": parsed.gt, ">=": parsed.ge, "<": parsed.lt, "<=": parsed.le}[rule.op]
        masks["outliers"] = compare(rule.number)
        details["outliers"] = f"rule {rule.describe()}"
    return ColumnCheck(column, kind, {k: v.fillna(False).astype(bool) for k, v in masks.items()},
                       details, stats)


def _end(value: Any) -> str:
    return "open" if value is None else f"{value:g}"


def _example(mask: pd.Series, values: pd.Series) -> tuple[int | None, str]:
    """The first offending row (numbered from 1 after the header, as load errors number them) and its value."""
    import pandas as pd

    if not mask.any():
        return None, ""
    position = int(mask.to_numpy().argmax())
    value = values.iloc[position]
    text = "" if pd.isna(value) else str(value).strip()
    return position + 1, str(value) if text else "(empty)"


def _duplicates(frame: pd.DataFrame, columns: list[str], check: str, label: str) -> tuple[int, dict[str, Any] | None]:
    """Rows repeating an earlier row on ``columns``: their count and a finding with an example."""
    duplicated = frame.duplicated(subset=columns, keep="first")
    count = int(duplicated.sum())
    if not count:
        return 0, None
    position = int(duplicated.to_numpy().argmax())
    text = frame[columns].astype(object).where(frame[columns].notna(), "").astype(str)
    same = text.eq(text.iloc[position]).all(axis=1).to_numpy()
    first = int(same.argmax())
    example = ", ".join(f"{c}={text.iloc[position][c]}" for c in columns[:4]) + (", ..." if len(columns) > 4 else "")
    return count, {"check": check, "column": label, "count": count, "example_row": position + 1,
                   "example_value": example[:200], "detail": f"same as row {first + 1}"}


@experiment(
    "data-quality",
    params={
        "dataset": Param(str, "dk_bank_details", "the catalog data set to check"),
        "outlier_rule": Param(str, "iqr:1.5", "iqr:<factor> for every numeric column, or '<column> <op> <number>' "
                                              "(op > >= < <=) for one column, e.g. 'engagement_rate > 0.5'"),
        "key": Param(str, "", "comma-separated columns that should identify a row; empty: no key check"),
    },
)
def data_quality(ctx):
    """Data quality of a catalog data set: what would make an analysis of it wrong.

    Reads the file with every column as text, then checks each declared column:
    missing values, values that are present but not of the declared type, values
    outside the declared range, and outliers by the IQR rule or a threshold.
    Also counts duplicated rows (and duplicated keys), and declared columns the
    file lacks. Nothing is fixed; every finding is counted, with an example row.
    """
    import pandas as pd

    rule = parse_rule(ctx.params["outlier_rule"])
    name = ctx.params["dataset"]
    dataset = ctx.lab.dataset(name)
    numeric = [c for c, kind in dataset.columns.items() if kind in NUMERIC_KINDS]
    if rule.kind == "threshold" and rule.column not in numeric:
        raise ParamError(f"param 'outlier_rule': rule {rule.text!r} names {rule.column!r}, which is not a numeric "
                         f"column of data set {name!r}; numeric columns: {', '.join(numeric) or 'none'}")
    key = [c.strip() for c in ctx.params["key"].split(",") if c.strip()]
    unknown_key = [c for c in key if c not in dataset.columns]
    if unknown_key:
        raise ParamError(f"param 'key': {unknown_key[0]!r} is not a declared column of data set {name!r}; "
                         f"columns: {', '.join(dataset.columns)}")

    path = ctx.dataset_path(name)
    frame = ctx.load_text(name)
    rows = len(frame)
    absent = [c for c in dataset.columns if c not in frame.columns]
    keys: dict[str, str] = {}
    for column in dataset.columns:
        base = metric_key(column)
        keys[column] = base if base not in keys.values() else f"{base}.{len(keys)}"

    findings: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    for column in absent:
        findings.append({"check": "missing_column", "column": column, "count": 1, "example_row": None,
                         "example_value": "", "detail": f"declared {dataset.columns[column]} column not in the file"})
        summary.append({"column": column, "type": dataset.columns[column], "present": False})
        for check in _checks_for(column, dataset, rule):
            ctx.skip_metric(f"{check}.{keys[column]}", f"column {column!r} is not in the file")

    for column, kind in dataset.columns.items():
        if column in absent:
            continue
        result = check_column(column, frame[column], kind, dataset.ranges.get(column), rule)
        row = {"column": column, "type": kind, "present": True, **result.stats}
        for check, mask in result.masks.items():
            count = int(mask.sum())
            metrics[f"{check}.{keys[column]}"] = count
            row[check] = count
            if count:
                example_row, example_value = _example(mask, frame[column])
                findings.append({"check": check, "column": column, "count": count, "example_row": example_row,
                                 "example_value": example_value[:200], "detail": result.details[check]})
        if "outliers_skipped" in result.stats:
            ctx.skip_metric(f"outliers.{keys[column]}", result.stats["outliers_skipped"])
        summary.append(row)

    duplicate_rows, finding = _duplicates(frame, list(frame.columns), "duplicate_rows", "(all columns)")
    findings += [finding] if finding else []
    metrics.update({"rows": rows, "columns": len(dataset.columns), "missing_columns": len(absent),
                    "duplicate_rows": duplicate_rows})
    if key:
        missing_key = [c for c in key if c in absent]
        if missing_key:
            ctx.skip_metric("duplicate_keys", f"key column {missing_key[0]!r} is not in the file")
        else:
            metrics["duplicate_keys"], finding = _duplicates(frame, key, "duplicate_keys", ", ".join(key))
            findings += [finding] if finding else []
    for check in CHECKS:
        metrics[f"total.{check}"] = sum(v for k, v in metrics.items() if k.startswith(f"{check}."))
    metrics["findings"] = len(findings)
    ctx.log_metrics(metrics)

    table = pd.DataFrame(findings, columns=["check", "column", "count", "example_row", "example_value", "detail"])
    table["example_row"] = table["example_row"].astype("Int64")
    ctx.log_table(table, "findings")
    columns = pd.DataFrame(summary)
    ctx.log_table(columns, "columns")
    ctx.log_figure(_figure(columns, rows, name), "findings_by_column")
    ctx.report(_report(name, path, rows, dataset, rule, key, table, metrics, absent))


def _checks_for(column: str, dataset: Dataset, rule: OutlierRule) -> list[str]:
    """The per-column metrics a declared column would get."""
    kind = dataset.columns[column]
    checks = ["missing"] + (["type_violations"] if kind != "string" else [])
    if column in dataset.ranges and kind in NUMERIC_KINDS:
        checks.append("out_of_range")
    if kind in NUMERIC_KINDS and (rule.kind == "iqr" or rule.column == column):
        checks.append("outliers")
    return checks


def _figure(columns: pd.DataFrame, rows: int, name: str) -> Any:
    """A grid of declared columns by check: the count in each cell, coloured by share of rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = columns.reindex(columns=list(CHECKS)).to_numpy(dtype=float)
    share = counts / max(rows, 1)
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.38 * max(len(columns), 1)))
    image = axis.imshow(np.ma.masked_invalid(share), cmap="OrRd", vmin=0, vmax=max(float(np.nanmax(share, initial=0)), 0.01),
                        aspect="auto")
    axis.set_facecolor("#eeeeee")
    for (i, j), value in np.ndenumerate(counts):
        present = bool(columns["present"].iloc[i])
        label = ("absent" if j == 0 else "") if not present else ("–" if np.isnan(value) else f"{int(value):,}")
        axis.text(j, i, label, ha="center", va="center", fontsize=8,
                  color="white" if not np.isnan(share[i, j]) and share[i, j] > 0.6 * image.get_clim()[1] else "black")
    axis.set_xticks(range(len(CHECKS)), ["missing", "type\nviolations", "out of\nrange", "outliers"])
    axis.set_yticks(range(len(columns)), [f"{c} ({t})" for c, t in zip(columns["column"], columns["type"])])
    axis.xaxis.tick_top()
    axis.set_title(f"Data quality of {name}: {rows:,} rows (– = check does not apply)", fontsize=10, pad=24)
    figure.colorbar(image, ax=axis, label="share of rows", fraction=0.04)
    figure.tight_layout()
    return figure


def _report(name: str, path: Path, rows: int, dataset: Dataset, rule: OutlierRule, key: list[str],
            table: pd.DataFrame, metrics: dict[str, float], absent: list[str]) -> str:
    import pandas as pd

    lines = [f"## Data quality of `{name}`", "",
             f"`{path.name}`: {rows:,} rows, {len(dataset.columns)} declared columns"
             + (f" ({len(absent)} not in the file: {', '.join(absent)})" if absent else "") + ".",
             f"Outliers: {rule.describe()} (rule `{rule.text}`)."
             + (f" Key: {', '.join(key)}." if key else ""), ""]
    if table.empty:
        lines.append("**No findings.**")
    else:
        lines += [f"**{len(table)} findings.**", "",
                  "| check | column | count | share of rows | example row | example value | detail |",
                  "|---|---|---:|---:|---:|---|---|"]
        for r in table.itertuples():
            share = f"{r.count / rows:.2%}" if rows and r.check != "missing_column" else ""
            example = "" if pd.isna(r.example_row) else r.example_row
            value = str(r.example_value).replace("|", "\\|")
            lines.append(f"| {r.check} | {r.column} | {r.count:,} | {share} | {example} | `{value}` | {r.detail} |")
    clean = [c for c in CHECKS if not metrics.get(f"total.{c}")]
    lines += ["", f"Duplicate rows: {metrics['duplicate_rows']:,}."
              + (f" Duplicate keys: {metrics['duplicate_keys']:,}." if "duplicate_keys" in metrics else "")]
    if clean:
        lines.append("Nothing found by: " + ", ".join(c.replace("_", " ") for c in clean) + ".")
    lines += ["", ("Rows are numbered from 1 after the header, as bedrot-lab's load errors number them. "
                   "Missing means empty; in a typed column also a null marker the loader reads as null "
                   "(NA, NULL, ...). A type violation is a present value that does not parse as the declared "
                   "type (int: whole number; date: YYYY-MM-DD; month: YYYY-MM; bool: true/false/1/0).")]
    return "\n".join(lines)


@hookimpl
def register_experiments(register):
    register(data_quality)
