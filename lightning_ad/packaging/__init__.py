"""The detector as an MLflow model: how a trial logs it (``mlflow_model``, ``model_code``) and
the digests of its files that ``deploy`` checks before it reads or serves one (``digests``)."""

MAX_IMAGES_ENV = "LIGHTNING_AD_SERVE_MAX_IMAGES"
"""The most images one request may hold, where ``lightning-ad serve`` sets it (this package
file imports nothing, so the command line reads it without torch)."""
