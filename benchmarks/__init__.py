"""``make bench``: the benchmark rows, one module per concern, in one registry (``harness``)."""

from lightning_ad.environment import apply_mlflow_defaults

apply_mlflow_defaults()  # as the CLI does, before a row's module imports MLflow
