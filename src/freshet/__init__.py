"""freshet: event-driven retraining for Prefect.

The library the flows in ``flows/`` call, Prefect-free except where it talks to
Prefect on purpose (``events``, ``locks``):

- ``freshet.data``: what lands (contracts, validation, ingestion, the lake).
- ``freshet.modeling``: what is learned from it (features, XGBoost, the registry).
- ``freshet.lab``: the policy lab (retraining policies and their replay).
- ``freshet.ops``: running it (the local stack, the ``freshet`` command line).
- ``freshet.events`` (every event name and payload), ``freshet.settings`` (every setting),
  ``freshet.locks`` (per-dataset training slots).
"""

__version__ = "0.1.0"
