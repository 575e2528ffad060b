"""The one error hierarchy of raydsconv: every message says what, where, and how to fix it."""


class RaydsconvError(Exception):
    """Base class of every error raydsconv raises on purpose."""


class InvalidArgumentError(RaydsconvError, ValueError):
    """An argument or an input path is unusable (the CLI turns this into exit code 2)."""


class ManifestError(RaydsconvError):
    """A converted dataset on disk is missing, damaged, or of an unknown version."""


class ConversionError(RaydsconvError):
    """The conversion itself failed (a bad input in strict mode, a broken pipeline)."""


class UnsupportedFormatError(InvalidArgumentError):
    """A format name that no registered format answers to."""
