"""A trial's detector on its own: saved, served as an MLflow model, registered, and
used to score new images."""
