"""Which settings fingerprint a table or a registration reads: a sweep's category may have runs
under several (the settings changed, or the data is on another machine)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from lightning_ad import tracking
from lightning_ad.errors import LightningADError
from lightning_ad.sweep.fingerprint import Settings

if TYPE_CHECKING:
    from lightning_ad.sweep.spec import SweepTarget


class FingerprintChoice(NamedTuple):
    """The settings fingerprint whose runs are read, and whether it is the ``current`` one: the
    fingerprint that the sweep file and data here give (today's settings)."""

    fingerprint: str
    current: bool


def choose_fingerprint(
    target: SweepTarget, chosen: str | None, say: Callable[[str], None]
) -> FingerprintChoice:
    """Which fingerprint of a sweep's category a table (or a cell's registration) reads.

    ``chosen`` when given; else the current one, when it has runs; else the newest that has
    runs (a machine without the data, reading a shared server's runs). Lines for people go to
    ``say`` as soon as they are known, so that one said before an error explains it: that the
    data is not here, or that the current fingerprint has no runs yet (when so), then the read
    fingerprint's settings and the sweep's other fingerprints.

    Args:
        target: one category of a sweep, with its tracking URI and experiment.
        chosen: the fingerprint the user named (``--fingerprint``), or None.
        say: takes each line, e.g. to print it on stderr.

    Returns:
        The fingerprint to read and whether it is the current one.

    Raises:
        LightningADError: ``chosen`` is not a fingerprint of the category's sweep runs, or none
            was chosen and neither the data here nor a sweep run gives one.
    """
    parents = tracking.sweep_parents(
        target.tracking_uri, target.experiment, target.spec.name, target.category
    )
    fingerprints = {}  # newest first
    for run in parents:
        fingerprints.setdefault(run.data.tags.get(tracking.FINGERPRINT_TAG), run)
    fingerprints.pop(None, None)  # parent runs made before fingerprints
    name = f"{target.spec.name}-{target.category}"
    current = None
    if chosen is None:
        try:
            current = target.fingerprint
        except LightningADError as err:  # no data here: the shared server's runs still count
            say(f"{name}: the data is not here ({err})")
        chosen = current
        if current not in fingerprints and fingerprints:
            chosen = next(iter(fingerprints))
            say(
                f"{name}: fingerprint {current} (this sweep file and data) has no runs yet; "
                f"showing the newest, {chosen}"
            )
    if chosen is not None and chosen == current:
        settings = target.settings
    elif chosen in fingerprints:
        run_id = fingerprints[chosen].info.run_id
        settings = Settings(tracking.parent_settings(target.tracking_uri, run_id))
    else:
        known = ", ".join(fingerprints) or "none"
        raise LightningADError(
            f"--fingerprint {chosen}: not a fingerprint of sweep {target.spec.name}, category "
            f"{target.category}; known: {known}"
        )
    say(f"{name}: settings {settings.describe()}")
    others = [f for f in fingerprints if f != chosen]
    if others:
        say(f"  other settings of this sweep (--fingerprint): {', '.join(others)}")
    return FingerprintChoice(chosen, chosen == current)
