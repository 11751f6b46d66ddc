"""Data: the MVTec AD layout, the built-in look-alike categories, anomaly twins, the DataModule."""
