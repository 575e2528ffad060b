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


class OutputLockedError(ConversionError):
    """Another conversion holds the output's lock."""


class ConversionInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a conversion; what was written is kept, and the same command resumes.
    A KeyboardInterrupt, so that Ctrl-C in Python or Jupyter behaves as usual."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number  # 130 for SIGINT, 143 for SIGTERM, as shells report them
