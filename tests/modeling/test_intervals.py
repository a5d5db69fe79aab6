"""Prediction intervals on hand-made numbers: scaled residual tables, offsets, cross-fitted scores."""

from __future__ import annotations

import numpy as np
import pytest

from freshet.modeling import intervals as I

QUANTILES = (0.1, 0.5, 0.9)


def test_quantile_columns_are_named_in_percent() -> None:
    assert [I.quantile_column(q) for q in (0.1, 0.5, 0.9, 0.025)] == ["p10", "p50", "p90", "p2.5"]
    assert I.central_pairs((0.05, 0.1, 0.5, 0.9)) == [(0.1, 0.9)]


def test_a_table_is_in_units_of_the_square_root_of_each_rows_forecast() -> None:
    # two count-like series, one a hundred times larger: a Poisson count's spread is the root of its mean
    rng = np.random.default_rng(0)
    point = np.where(np.arange(4000) % 2, 1.0, 100.0)
    table = I.residual_table(point + rng.normal(0, 1, 4000) * np.sqrt(point), point, point)
    values = I.bands(np.array([1.0, 100.0]), np.array([1.0, 100.0]), I.offsets(table, QUANTILES, 2), clip=False)
    assert values[0, 2] == pytest.approx(1 + 1.2816, abs=0.1) and values[1, 2] == pytest.approx(100 + 12.816, abs=1)
    assert values[1, 0] == pytest.approx(100 - 12.816, abs=1)


def test_in_a_zero_heavy_panel_a_large_series_gets_a_p10_above_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 18's pizza cell: small series that sell nothing on most days pull the pooled p10 to "actual = 0";
    # in units of the forecast itself that is p10 = 0 for every series, in square-root units only for small ones
    rng = np.random.default_rng(4)
    small, large = np.full(3000, 0.5), np.full(1000, 40.0)
    point = np.concatenate([small, large])
    actual = np.concatenate([rng.poisson(small), rng.poisson(large)]).astype(float)
    table = I.residual_table(actual, point, point)
    values = I.bands(np.array([0.5, 40.0]), np.array([0.5, 40.0]), I.offsets(table, QUANTILES, 2), clip=True)
    assert values[0, 0] == 0.0 and values[1, 0] > 20  # a Poisson(40)'s 10th percentile is 32
    monkeypatch.setattr(I, "SCALE_MODE", "point")  # the unit shipped before: the large series' p10 falls to 0 too
    table = I.residual_table(actual, point, point)
    assert I.bands(np.array([40.0]), np.array([40.0]), I.offsets(table, QUANTILES, 1), clip=True)[0, 0] == 0.0


def test_rows_without_a_scale_or_forecast_are_not_used() -> None:
    assert I.residual_table(np.array([1.0, 2.0]), np.array([np.nan, 1.0]), np.array([1.0, 0.0])) is None


def test_cross_fitted_coverage_is_not_in_sample() -> None:
    # window 0 has errors ten times those of the others: ranges fitted on the others miss it
    rng = np.random.default_rng(1)
    windows = np.repeat([0, 1, 2, 3], 200)
    actual = rng.normal(0, 1, 800) * np.where(windows == 0, 10, 1) + 50
    pooled, per_window, table = I.cross_fitted(actual, np.full(800, 50.0), np.ones(800), windows, QUANTILES,
                                               clip=False)
    assert per_window[0]["coverage"]["p10-p90"]["empirical"] < 0.3
    assert all(0.8 < per_window[w]["coverage"]["p10-p90"]["empirical"] <= 1.0 for w in (1, 2, 3))
    assert pooled["rows"] == 800 and table["rows"] == 800
    assert set(pooled["pinball"]) == {"p10", "p50", "p90"} and pooled["pinball_scaled"] > 0


def test_pinball_loss_is_zero_for_a_perfect_quantile_and_grows_with_the_miss() -> None:
    actual = np.array([1.0, 2.0])
    perfect = I.score(actual, np.column_stack([actual, actual, actual]), QUANTILES)
    off = I.score(actual, np.column_stack([actual - 1, actual, actual + 1]), QUANTILES)
    assert perfect["pinball"] == {"p10": 0.0, "p50": 0.0, "p90": 0.0}
    assert off["pinball"]["p10"] == pytest.approx(0.1) and off["pinball"]["p90"] == pytest.approx(0.1)
    assert off["coverage"]["p10-p90"]["empirical"] == 1.0


def test_extra_out_of_sample_rows_join_every_table_but_are_never_scored() -> None:
    rng = np.random.default_rng(2)
    windows = np.repeat([0, 1, 2, 3], 50)
    actual = rng.normal(0, 1, 200) * 5 + 50  # the backtest's errors are five times the validation's assumption
    narrow, _, _ = I.cross_fitted(actual, np.full(200, 50.0), np.ones(200), windows, QUANTILES, clip=False, extra=(np.full(2000, 50.0) + rng.normal(0, 1, 2000),
                                                                np.full(2000, 50.0), np.ones(2000)))
    alone, _, table = I.cross_fitted(actual, np.full(200, 50.0), np.ones(200), windows, QUANTILES, clip=False)
    assert narrow["rows"] == alone["rows"] == 200  # the extra rows are pooled, not scored
    assert narrow["coverage"]["p10-p90"]["empirical"] < alone["coverage"]["p10-p90"]["empirical"]
    assert table["rows"] == 200


@pytest.mark.parametrize("n", [16, 96])
def test_a_small_table_covers_the_nominal_share_of_new_residuals(n: int) -> None:
    # 4 backtest windows of 4 weeks are 16 residuals: the range from them must still cover 80% of new ones
    rng = np.random.default_rng(3)
    inside = []
    for _ in range(800):
        table = I.residual_table(100 + 100 * rng.normal(0, 1, n), np.full(n, 100.0), np.full(n, 100.0))
        band = I.bands(np.array([100.0]), np.array([100.0]), I.offsets(table, QUANTILES, 1), clip=False)[0]
        new = 100 + 100 * rng.normal(0, 1, 50)
        inside.append(((new >= band[0]) & (new <= band[2])).mean())
    assert 0.78 < np.mean(inside) < 0.82
