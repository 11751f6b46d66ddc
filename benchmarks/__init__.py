"""``make bench``: the benchmark rows, one module per concern, in one registry (``harness``)."""
