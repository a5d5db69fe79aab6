"""Synthetic ``retail_sales`` data: realistic, reproducible by seed.

Daily unit sales per store and item with weekly seasonality, price elasticity,
promotions, holidays, a demand shift part-way through, Poisson noise and a few
missing days. Pure: returns frames; the CLI writes them to the landing area.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

HOLIDAYS = [(1, 1), (5, 1), (7, 4), (11, 26), (12, 24), (12, 25), (12, 31)]


def generate_retail_sales(
    seed: int = 7,
    stores: int = 8,
    items: int = 12,
    days: int = 730,
    start: date = date(2024, 1, 1),
    missing_rate: float = 0.02,
) -> pl.DataFrame:
    """Rows of (date, store_id, item_id, units_sold, price, on_promo), sorted by date."""
    rng = np.random.default_rng(seed)
    n_series = stores * items
    dates = np.array([start + timedelta(days=d) for d in range(days)])
    day_numbers = np.arange(days) + (start - date(1970, 1, 1)).days
    dow = np.array([d.weekday() for d in dates])
    store = np.repeat(np.arange(1, stores + 1), items)
    item = np.tile(np.arange(1, items + 1), stores)

    level = rng.lognormal(mean=2.9, sigma=0.5, size=n_series)
    weekly_shape = np.array([0.85, 0.8, 0.9, 0.95, 1.1, 1.35, 1.25])
    amplitude = rng.uniform(0.4, 1.2, size=items)[item - 1]
    weekly = 1 + amplitude[:, None] * (weekly_shape[dow][None, :] - 1)
    base_price = rng.uniform(1.5, 20.0, size=items)[item - 1]
    elasticity = rng.uniform(-2.6, -1.2, size=items)[item - 1]
    lift = rng.uniform(1.3, 1.9, size=items)[item - 1]

    # promotions: runs of 3-7 days starting on ~6% of days
    promo = np.zeros((n_series, days), dtype=bool)
    starts = rng.random((n_series, days)) < 0.06
    for s, d in zip(*np.nonzero(starts)):
        promo[s, d : d + rng.integers(3, 8)] = True
    discount = np.where(promo, rng.uniform(0.1, 0.35, size=(n_series, days)), 0.0)
    drift = np.exp(np.cumsum(rng.normal(0, 0.01, size=(n_series, days)), axis=1))
    price = np.round(base_price[:, None] * drift * (1 - discount), 2)

    holiday = np.array([(d.month, d.day) in HOLIDAYS for d in dates])
    eve = np.array([((d + timedelta(days=1)).month, (d + timedelta(days=1)).day) in HOLIDAYS for d in dates])
    calendar = np.where(holiday, 0.4, np.where(eve, 1.6, 1.0))

    shift_day = int(days * 0.6)
    shift = np.ones((n_series, days))
    store_factor = np.where(np.arange(1, stores + 1) % 2 == 0, 1.3, 0.8)[store - 1]
    shift[:, shift_day:] = store_factor[:, None]

    mu = (
        level[:, None]
        * weekly
        * (price / (base_price[:, None] * drift)) ** elasticity[:, None]
        * np.where(promo, lift[:, None], 1.0)
        * calendar[None, :]
        * shift
    )
    units = rng.poisson(mu).astype(np.float64)
    keep = rng.random((n_series, days)) >= missing_rate

    frame = pl.DataFrame(
        {
            "date": np.tile(day_numbers, n_series)[keep.ravel()].astype(np.int32),
            "store_id": np.repeat(store, days)[keep.ravel()].astype(np.int32),
            "item_id": np.repeat(item, days)[keep.ravel()].astype(np.int32),
            "units_sold": units.ravel()[keep.ravel()],
            "price": price.ravel()[keep.ravel()],
            "on_promo": promo.ravel()[keep.ravel()],
        }
    )
    return frame.with_columns(pl.col("date").cast(pl.Date)).sort(["date", "store_id", "item_id"])


def split_into_batches(frame: pl.DataFrame, files: int, batch_days: int = 7, time_column: str = "date") -> list[pl.DataFrame]:
    """A large history file, then ``files - 1`` batches of ``batch_days`` each, in time order."""
    if files < 1:
        raise ValueError("files must be at least 1")
    last = frame[time_column].max()
    cuts = [last - timedelta(days=batch_days * k) for k in range(files - 1, 0, -1)]
    batches, lower = [], None
    for cut in [*cuts, last]:
        cond = pl.col(time_column) <= cut
        if lower is not None:
            cond &= pl.col(time_column) > lower
        batches.append(frame.filter(cond))
        lower = cut
    return [b for b in batches if b.height]
