"""Models: backbones, metric-learning heads and the LightningModule."""
