"""Exceptions the user can act on.

Everything vggjit raises on purpose derives from :class:`VggjitError`, so the CLI can print the
message and exit instead of showing a traceback. Errors about the *shape or type of an array*
also derive from :class:`ValueError`, because that is what the driver contract promises.
"""


class VggjitError(Exception):
    """Base class of every error vggjit raises deliberately."""


class InputError(VggjitError, ValueError):
    """An array, image or option that does not fit the operation it was given to."""


class DriverNotFoundError(VggjitError, LookupError):
    """A driver name that no installed plugin provides."""


class DriverUnavailableError(VggjitError, RuntimeError):
    """A driver that is installed but cannot run on this machine, or lacks a capability."""


class DuplicateDriverError(VggjitError, RuntimeError):
    """Two plugins registered the same driver name."""


class WeightFileError(VggjitError, ValueError):
    """A weight or parameter file that is missing, truncated, corrupt or of the wrong network."""


class OutputExistsError(VggjitError, FileExistsError):
    """An output path that already exists and may not be overwritten."""
