"""The MLflow model's code (MLflow's models-from-code): loading it runs this file, which hands
MLflow the model object; nothing is unpickled."""

from mlflow.models import set_model

from lightning_ad.packaging.mlflow_model import DetectorModel

set_model(DetectorModel())
