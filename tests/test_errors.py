"""What a user reads: did-you-mean errors, and no password in any text this tool shows or
stores."""

from __future__ import annotations

import pytest

from lightning_ad.errors import describe, redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+psycopg://me:s3cret@db/optuna", "postgresql+psycopg://me:***@db/optuna"),
        (
            "postgresql+psycopg://me@db/optuna?sslmode=require&password=s3cret",
            "postgresql+psycopg://me@db/optuna?sslmode=require&password=***",
        ),
        ("http://me:s3cret@mlflow:5000", "http://me:***@mlflow:5000"),
        ("sqlite:////abs/mlruns/mlflow.db", "sqlite:////abs/mlruns/mlflow.db"),  # untouched
        ("http://mlflow:5000/api and me@example.org", "http://mlflow:5000/api and me@example.org"),
        ("mlruns/optuna.journal", "mlruns/optuna.journal"),
        (
            "connection failed: host=db user=lad password=s3cret dbname=optuna",
            "connection failed: host=db user=lad password=*** dbname=optuna",
        ),
        ("PGPASSWORD=s3cret psql", "PGPASSWORD=*** psql"),
        ('{"user": "lad", "password": "s3cret"}', '{"user": "lad", "password": "***"}'),
        (
            "API request to http://me:s3cret@mlflow:5000/api/2.0 failed; also PASSWORD='s3cret'",
            "API request to http://me:***@mlflow:5000/api/2.0 failed; also PASSWORD='***'",
        ),
    ],
)
def test_redact_hides_every_form_of_password(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_trial_records_its_error_without_the_password() -> None:
    err = ConnectionError("could not reach postgresql://lad:s3cret@db:5432/optuna")
    assert describe(err) == "ConnectionError: could not reach postgresql://lad:***@db:5432/optuna"


def test_optunas_failed_trial_warning_is_redacted() -> None:
    """Optuna logs a failed trial's exception and traceback; a sweep redacts both on every
    handler of Optuna's logger (here one that writes to a buffer)."""
    import io
    import logging

    from lightning_ad.sweep.runner import quiet_libraries

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logging.getLogger("optuna").addHandler(handler)
    try:
        quiet_libraries()
        try:
            raise ConnectionError("could not reach postgresql://lad:s3cret@db/optuna")
        except ConnectionError as err:
            logging.getLogger("optuna.study._optimize").warning(
                "Trial 3 failed because of the following error: %r", err, exc_info=True
            )
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    text = buffer.getvalue()
    assert "Trial 3 failed" in text and "Traceback" in text and "lad:***@db" in text
    assert "s3cret" not in text
