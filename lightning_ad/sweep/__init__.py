"""Sweeps: Optuna over a grid of trials, every trial an MLflow run.

- ``spec``: what a sweep is (``SweepSpec``, ``SearchSpec``) and where it runs (``SweepTarget``).
- ``storage``: the Optuna storage and the study over the grid.
- ``recovery``: failed, interrupted and orphaned cells queued again; where the grid stands.
- ``objective``: one grid cell -> one trial (or an inner search) -> its test AUC.
- ``search``: the inner study of a ``search`` block, on ``val/loss``.
- ``parent``: the sweep's parent run (medians, tables, status).
- ``runner``: ``run_sweep``, the worker loop and the worker processes.

Import from the modules themselves; this package file imports nothing, so that ``report`` can
name ``SweepSpec`` without importing the runner.
"""
