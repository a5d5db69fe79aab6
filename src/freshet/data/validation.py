"""Contract validation as pure polars: string columns in, typed columns and a reason out.

``typed_with_violations`` turns a frame whose columns are all strings (as read from
CSV with no inference) into the contract's dtypes plus a ``_violation`` column:
null for a valid row, else ``column:rule`` labels joined by ``;``. Every input row
stays in the output exactly once, so a row is either curated or quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from freshet.data.contracts import Contract

VIOLATION = "_violation"
ROW = "__row"
TRUE_STRINGS = ["true", "t", "1", "yes", "y"]
FALSE_STRINGS = ["false", "f", "0", "no", "n"]


@dataclass(frozen=True)
class SchemaProblem:
    column: str
    rule: str
    detail: str


def check_header(columns: list[str], contract: Contract) -> list[SchemaProblem]:
    """File-level problems: missing columns, and extra ones unless the contract ignores them."""
    problems = [
        SchemaProblem(c, "missing_column", f"column {c!r} is required by the contract")
        for c in contract.columns
        if c not in columns
    ]
    if contract.extra_columns == "reject":
        problems += [
            SchemaProblem(c, "unexpected_column", f"column {c!r} is not in the contract (extra_columns = 'reject')")
            for c in columns
            if c not in contract.columns
        ]
    return problems


def _cast(col: str, dtype: pl.DataType, strip: bool = True) -> pl.Expr:
    """Text to ``dtype``; null where the value does not parse. ``strip=False`` (the fast
    path) leaves surrounding whitespace in, so such a value fails to parse and the file
    takes the string path, which strips it: the same result, only slower."""
    raw = pl.col(col).str.strip_chars() if strip or dtype == pl.String() else pl.col(col)
    raw = pl.when(raw == "").then(None).otherwise(raw)
    if dtype == pl.Boolean():
        low = raw.str.to_lowercase()
        return (
            pl.when(low.is_in(TRUE_STRINGS)).then(True).when(low.is_in(FALSE_STRINGS)).then(False).otherwise(None)
        ).alias(col)
    if dtype == pl.Date():
        return raw.str.to_date("%Y-%m-%d", strict=False).alias(col)
    if dtype == pl.Datetime("us"):
        return raw.str.to_datetime(time_unit="us", strict=False, time_zone=None).alias(col)
    if dtype == pl.String():
        return raw.alias(col)
    return raw.cast(dtype, strict=False).alias(col)


def value_rules(contract: Contract, now: datetime, future_tolerance_hours: float) -> list[tuple[str, str, pl.Expr]]:
    """(column, rule, true when broken) for the rules on typed values: min, max, allowed, future."""
    checks: list[tuple[str, str, pl.Expr]] = []
    for col, rule in contract.rules.items():
        if rule.min is not None:
            checks.append((col, "min", pl.col(col) < rule.min))
        if rule.max is not None:
            checks.append((col, "max", pl.col(col) > rule.max))
        if rule.allowed is not None:
            checks.append((col, "allowed", pl.col(col).is_not_null() & ~pl.col(col).is_in(list(rule.allowed))))
    limit = now.replace(tzinfo=None) + _hours(future_tolerance_hours)
    is_date = contract.columns[contract.time_column] == pl.Date()
    checks.append((contract.time_column, "future", pl.col(contract.time_column) > pl.lit(limit.date() if is_date else limit)))
    return checks


def typed_with_violations(lf: pl.LazyFrame, contract: Contract, now: datetime, future_tolerance_hours: float,
                          check_duplicates: bool = True) -> pl.LazyFrame:
    """Cast string columns to the contract's dtypes and label every rule a row breaks.

    ``check_duplicates=False`` leaves the ``duplicate_key`` rule to the caller (chunked
    ingestion finds duplicates across chunks with ``duplicate_rows``). A ``__row`` column,
    if present, is carried through.
    """
    cols = list(contract.columns)
    raw = lf.select(cols + [c for c in (ROW,) if c in lf.collect_schema().names()])
    checks: list[tuple[str, str, pl.Expr]] = []
    typed_exprs = []
    for col, dtype in contract.columns.items():
        typed_exprs.append(_cast(col, dtype))
    typed = raw.with_columns([pl.col(c).alias(f"__raw_{c}") for c in cols]).with_columns(typed_exprs)

    for col, dtype in contract.columns.items():
        present = pl.col(f"__raw_{col}").str.strip_chars().fill_null("") != ""
        checks.append((col, "dtype", present & pl.col(col).is_null()))
    for col in contract.required_non_null:
        checks.append((col, "non_null", pl.col(f"__raw_{col}").str.strip_chars().fill_null("") == ""))
    checks += value_rules(contract, now, future_tolerance_hours)
    key = [contract.time_column, *contract.series_keys]
    if check_duplicates:
        checks.append((duplicate_label(contract), "duplicate_key", pl.int_range(pl.len()).over(key) > 0))

    labels = [pl.when(expr.fill_null(False)).then(pl.lit(f"{col}:{rule}")) for col, rule, expr in checks]
    violation = pl.concat_str(labels, separator=";", ignore_nulls=True)
    return typed.with_columns(pl.when(violation == "").then(None).otherwise(violation).alias(VIOLATION))


def duplicate_label(contract: Contract) -> str:
    return "+".join([contract.time_column, *contract.series_keys])


def key_hashes(checked: pl.DataFrame, contract: Contract) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of the typed key, ``__row``) for rows whose key is complete."""
    key = [contract.time_column, *contract.series_keys]
    keyed = checked.filter(pl.all_horizontal(pl.col(key).is_not_null()))
    return keyed.select(pl.struct(key).hash(seed=0)).to_series().to_numpy(), keyed[ROW].to_numpy()


def duplicate_rows(hashes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows whose key already appeared in an earlier row (the first occurrence is kept).

    Works on 8-byte hashes, not the rows, so memory grows with the row count only.
    """
    if hashes.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((rows, hashes))
    sorted_hashes = hashes[order]
    repeat = np.empty(sorted_hashes.size, dtype=bool)
    repeat[0] = False
    repeat[1:] = sorted_hashes[1:] == sorted_hashes[:-1]
    return np.sort(rows[order][repeat]).astype(np.int64)


def mark_rows(checked: pl.LazyFrame, rows: np.ndarray, label: str) -> pl.LazyFrame:
    """Add ``label`` to the violation of the given ``__row`` numbers."""
    if rows.size == 0:
        return checked
    hit = pl.col(ROW).is_in(pl.Series(rows, dtype=pl.UInt32 if rows.max() < 2**32 else pl.UInt64).implode())
    merged = pl.concat_str([pl.col(VIOLATION), pl.lit(label)], separator=";", ignore_nulls=True)
    return checked.with_columns(pl.when(hit).then(merged).otherwise(pl.col(VIOLATION)).alias(VIOLATION))


def _hours(h: float) -> timedelta:
    return timedelta(hours=h)


def valid_rows(checked: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """Rows that break no rule, typed as the contract says."""
    return checked.filter(pl.col(VIOLATION).is_null()).select(list(contract.columns))


def invalid_rows(checked: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """Rows that break a rule, with their original text (nothing is lost) and the reason."""
    return checked.filter(pl.col(VIOLATION).is_not_null()).select(
        *[pl.col(f"__raw_{c}").alias(c) for c in contract.columns], VIOLATION
    )


def summarize_violations(bad: pl.DataFrame | pl.LazyFrame, examples: int = 3) -> list[dict]:
    """Machine-readable reasons: one record per (column, rule) with a count and example rows.

    Works on a lazy frame too, so a file of millions of bad rows is summarised without
    loading it: the counts stream, and only the examples are collected.
    """
    lazy = bad.lazy()
    labels = pl.col(VIOLATION).str.split(";")
    counts = (
        lazy.select(labels.alias("__label")).explode("__label")
        .group_by("__label", maintain_order=True).agg(pl.len().alias("rows"))
        .collect()
    )
    out = []
    for label, count in counts.iter_rows():
        column, rule = label.rsplit(":", 1)
        sample = lazy.filter(labels.list.contains(label)).head(examples).drop(VIOLATION).collect()
        out.append({"column": column, "rule": rule, "rows": count, "examples": sample.cast(pl.String).to_dicts()})
    return out


def reader_dtypes(contract: Contract) -> dict[str, pl.DataType]:
    """Columns polars' CSV reader may type itself (numbers); the rest are read as text and cast by ``_cast``."""
    return {c: d for c, d in contract.columns.items() if d.is_numeric()}


def typed_with_breaks(lf: pl.LazyFrame, contract: Contract, now: datetime, future_tolerance_hours: float) -> pl.LazyFrame:
    """The contract's columns typed, plus ``__bad``: true for a row that breaks any row rule.

    ``lf`` has the columns of ``reader_dtypes`` already typed and the others as text (the
    fast path for clean files). Only whether a row is bad is computed, not which rule:
    a file with a bad row is checked again by ``typed_with_violations``, which labels it.
    Duplicate keys are not a row rule: the caller checks them across the file.
    """
    text = [c for c in contract.columns if c not in reader_dtypes(contract)]
    typed = lf.select(list(contract.columns)).with_columns(pl.col(c).alias(f"__raw_{c}") for c in text)
    typed = typed.with_columns(_cast(c, contract.columns[c], strip=False) for c in text)
    breaks = [pl.col(f"__raw_{c}").str.strip_chars().fill_null("").ne("") & pl.col(c).is_null() for c in text]
    breaks += [pl.col(c).is_null() for c in contract.required_non_null]
    breaks += [expr for _, _, expr in value_rules(contract, now, future_tolerance_hours)]
    bad = pl.any_horizontal([b.fill_null(False) for b in breaks]).alias("__bad")
    return typed.select(*contract.columns, bad)
