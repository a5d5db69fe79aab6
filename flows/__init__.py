"""freshet: event-driven retraining for Prefect.

The flow code lives in this folder (installed as the import package ``freshet``):
``ingest.py`` and ``train.py`` hold the Prefect flows; everything else is
Prefect-free logic they call (contracts, validation, lake, features, model,
registry, events).
"""

__version__ = "0.1.0"
