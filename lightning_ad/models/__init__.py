"""Models: the network in plain torch (backbones, heads, ``net``), its settings (``config``),
the scorers and PatchCore, the ``Detector`` built from them, and the LightningModule."""
