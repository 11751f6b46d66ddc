"""lightning_ad: which self-supervised anomaly detector works on *your* parts."""

__version__ = "0.3.4"
