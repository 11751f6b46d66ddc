"""Sweeps: an Optuna study whose trials are the cells of a grid, every trial an MLflow run.

- ``spec``: what a sweep is (``SweepSpec``, ``SearchSpec``) and where it runs (``SweepTarget``).
- ``fingerprint``: what a cell's result depends on beyond its grid values, hashed.
- ``history``: which fingerprint of a sweep's runs a table or a registration reads.
- ``preflight``: the data, weights, tracking URI and storage checked before anything is written.
- ``storage``: the Optuna storage, one per process and URL.
- ``liveness``: a local worker's file lock, which tells for sure whether its trial is alive.
- ``recovery``: the queue of cells: missing, failed, interrupted and orphaned cells queued
  (once); where the grid stands.
- ``study``: the study of one settings fingerprint, in its storage.
- ``objective``: one queued cell -> one trial (or an inner search) -> its test AUC.
- ``search``: the inner study of a ``search`` block, on ``val/loss``.
- ``parent``: the sweep's parent run (medians, tables, status).
- ``progress``: the live view of a sweep in the terminal.
- ``runner``: ``run_sweep``, the worker loop and the worker processes.

Import from the modules themselves; this package file imports nothing, so that importing one
module does not import the runner.
"""
