"""The ``naive`` driver: the direct loops of the lab's "raw" layers, the oracle for all others.

Registered through the ``vggjit.drivers`` entry point like any third-party driver.
"""
from vggjit.contract import BACKWARD, FORWARD, DriverRecord, hookimpl


@hookimpl
def vggjit_drivers():
    from .driver import NaiveDriver  # noqa: PLC0415 - only built when selected

    return [DriverRecord(
        name="naive",
        description="direct loops in float64, obviously correct and slow: the reference",
        priority=0,
        factory=NaiveDriver,
        capabilities=frozenset({FORWARD, BACKWARD}),
    )]
