"""The one place for freshet's settings.

Every field has a default and an environment override ``FRESHET_<FIELD>``
(for example ``FRESHET_LAKE_URL``). Secrets are never fields here: S3
credentials come from the standard AWS environment/config chain or from a
Prefect ``Secret`` block named by ``FRESHET_STORAGE_BLOCK``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from freshet.data.contracts import parse_duration

BUNDLED_CONTRACTS = Path(__file__).resolve().parent / "data" / "bundled_contracts"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRESHET_", extra="ignore")

    # --- storage -------------------------------------------------------
    lake_url: str = Field(
        ".freshet/lake",
        description="Base URL of the lake: a local folder (relative paths are resolved "
        "against the current directory) or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Custom S3 endpoint (MinIO, moto, ...); unset for AWS S3."
    )
    storage_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block whose JSON value holds extra s3fs "
        "storage options (key, secret, token, ...). Unset: the AWS credential chain.",
    )
    io_retries: int = Field(4, ge=0, description="Retries for transient storage errors.")
    io_retry_base_delay: float = Field(
        0.5, ge=0, description="First backoff delay in seconds; doubles each retry."
    )

    # --- contracts and validation ---------------------------------------
    contracts_dir: Path = Field(
        BUNDLED_CONTRACTS,
        description="Folder of dataset contract files (*.toml); defaults to the bundled ones.",
    )
    on_bad_rows: Literal["quarantine_rows", "reject_file"] = Field(
        "quarantine_rows",
        description="quarantine_rows: admit the valid rows of a file and quarantine the bad "
        "ones; reject_file: one bad row quarantines the whole file.",
    )
    future_tolerance_hours: float = Field(
        36.0, ge=0, description="Rows whose time is further than this in the future are rejected."
    )
    max_event_uris: int = Field(
        1000, ge=1, description="Largest number of URIs accepted in one event or run."
    )

    # --- training -------------------------------------------------------
    holdout_periods: int | None = Field(
        None, ge=1, description="Override of every contract's backtest span, in periods of its frequency (unset: the "
        "contract's 'holdout', else 4 windows of its horizon)."
    )
    validation_periods: int | None = Field(
        None, ge=1, description="Override of every contract's early-stopping span before the backtest, in periods "
        "(unset: the contract's 'validation', else max(4 x horizon, 2 seasons))."
    )
    xgb_max_rounds: int = Field(800, ge=1, description="Upper bound on boosting rounds.")
    xgb_early_stopping_rounds: int = Field(40, ge=1, description="Early-stopping patience.")
    xgb_learning_rate: float = Field(0.08, gt=0, description="XGBoost eta.")
    xgb_max_depth: int = Field(8, ge=1, description="XGBoost max_depth.")
    xgb_nthread: int = Field(0, ge=0, description="XGBoost threads; 0 uses every core.")
    xgb_max_train_rows: int = Field(
        500_000, ge=0, description="The evaluated fit trains on a seeded uniform sample of this many rows of the span "
        "before validation when it has more (fit time grows with rows; 0: every row). Validation, backtest and the "
        "serving model's continuation use every row.",
    )
    stats_models: str = Field(
        "mstl", description="The statistical family's candidates (needs `pip install freshet[stats]`), comma-separated: "
        "mstl (statsforecast MSTL on the contract's seasons: day and week for sub-daily data), ets (AutoETS on the "
        "shortest season); empty: the family is off (named so in meta.json).",
    )
    stats_max_series: int = Field(
        25, ge=0, description="The statistical family runs only on datasets with at most this many series: it fits "
        "each series once per backtest window (MSTL costs about 1-2 s per series and fit on 2 cores); above the cap "
        "it is named as not run in meta.json and the training report.",
    )
    min_improvement: float = Field(
        0.0,
        ge=-0.5,
        le=0.99,
        description="Relative WAPE improvement over the champion required to promote "
        "(0.01 = 1% better). A negative value promotes a fresher model that is at most that "
        "much worse (-0.01 = up to 1% worse), trading a little accuracy for freshness.",
    )
    debounce_quiet_seconds: float = Field(
        3.0,
        ge=0,
        description="An event-triggered run waits until no new file has landed for this "
        "long before training, so a burst is trained once (0: no quiet period).",
    )
    debounce_max_wait_seconds: float = Field(
        60.0, ge=0, description="Upper bound on that wait: training starts by then whatever keeps landing."
    )
    trigger_throttle_seconds: float = Field(
        10.0,
        ge=0,
        description="The `within` of the train trigger in deployments/prefect.yaml: events for a "
        "dataset within this long of the one that fired are dropped by Prefect, so an "
        "event-triggered run takes its first look at the manifest no earlier than this after "
        "its event. Keep both equal (a test checks).",
    )
    max_train_rounds_per_run: int = Field(
        3,
        ge=1,
        description="A train run re-checks the manifest after training and trains again "
        "when data landed meanwhile, at most this many times.",
    )

    train_slots: int = Field(
        2,
        ge=1,
        description="Trainings that may fit at once across all datasets (the Prefect global concurrency "
        "limit freshet-train-slots). A run waiting for its dataset or for a burst to settle holds none.",
    )

    scoring_span: timedelta = Field(
        timedelta(days=28),
        description="Live accuracy: each ingest scores only this trailing span of data time (a duration: 28d, 12w, "
        "720h), ending at the newest landed period, and opens only the forecasts that cover it; at least the "
        "contract's drift_window plus its horizon, so the drift verdict sees its whole window. The chart and "
        "`freshet scores` show the span.",
    )

    # --- wiring ---------------------------------------------------------
    stale_after_seconds: float | None = Field(
        None,
        ge=10,
        description="Staleness window for every dataset's alarm, overriding the contracts' "
        "staleness_hours (Prefect's proactive triggers need at least 10 s).",
    )
    notify_block: str | None = Field(
        None,
        description="Notification block ('block-type-slug/block-name', e.g. 'slack-webhook/ops') "
        "that staleness alarms also notify.",
    )
    train_deployment: str = Field(
        "train/train", description="Deployment the watchdog starts to retrain a dataset."
    )
    runner: Literal["worker", "serve"] | None = Field(
        None,
        description="How `freshet up` runs flows. serve: long-lived `freshet serve` processes hold the flows "
        "loaded and start each run in a spawned subprocess, seconds sooner; no work pool. worker: `prefect deploy` "
        "to work pool 'freshet' and process workers poll it (each run a new `python -m prefect.engine`). "
        "Unset: serve on the local stack, worker on `freshet up --scale` (see freshet.ops.serve).",
    )
    stack_dir: Path = Field(
        Path(".freshet/stack"),
        description="Where `freshet up` keeps the Prefect home, logs and process ids.",
    )
    stack_port: int = Field(
        4200, ge=0, description="Port of the local Prefect server (0: pick a free port)."
    )

    scale_database_url: str | None = Field(
        None,
        description="`freshet up --scale`: the Prefect database, e.g. postgresql+asyncpg://user:pass@host:5432/prefect. "
        "Unset: a throwaway PostgreSQL cluster (initdb) under the stack folder.",
    )
    scale_redis_url: str | None = Field(
        None,
        description="`freshet up --scale`: Redis for Prefect's messaging, leases and docket, e.g. redis://host:6379/0. "
        "Unset: a local redis-server without persistence.",
    )
    scale_workers: int = Field(2, ge=1, description="`freshet up --scale`: process workers (or `freshet serve` processes) to start.")
    postgres_bin_dir: Path = Field(
        Path("/usr/lib/postgresql/15/bin"),
        description="Folder holding PostgreSQL's initdb and postgres, for the throwaway cluster of `freshet up --scale`.",
    )

    @field_validator("contracts_dir", "stack_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("scoring_span", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        span = parse_duration(v) if isinstance(v, str) else v
        if isinstance(span, timedelta) and span <= timedelta(0):
            raise ValueError(f"{v!r} is not a positive duration")
        return span

    @field_validator("lake_url")
    @classmethod
    def _resolve_lake(cls, v: str) -> str:
        if "://" in v:
            return v.rstrip("/")
        return str(Path(v).expanduser().resolve())


def get_settings() -> Settings:
    """Read settings from the environment now (not cached: tests and CLIs change it)."""
    return Settings()
