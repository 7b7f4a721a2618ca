"""Shared set-up for the benchmark scripts (run as `python benchmarks/bench_X.py`)."""

from __future__ import annotations

import logging
import os
import warnings


def isolate_environment() -> None:
    """No variable pointing at a real lake or store, and MLflow's loggers quiet."""
    from bedrot_lab.testing import ISOLATED_VARIABLES

    for name in ISOLATED_VARIABLES:
        os.environ.pop(name, None)
    os.environ["BEDROT_USER"] = "bench"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    warnings.filterwarnings("ignore")
    import mlflow  # noqa: F401  (configures its loggers on import; quiet them afterwards)

    for noisy in ("alembic", "mlflow", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
