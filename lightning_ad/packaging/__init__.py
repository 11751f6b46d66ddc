"""The detector as an MLflow model: how a trial logs it (``mlflow_model``, ``model_code``) and
the digests of its files that ``deploy`` checks before it reads or serves one (``digests``)."""
