"""The one error hierarchy of raydsconv: every message says what, where, and how to fix it."""

import errno as _errno
import os
from contextlib import contextmanager
from typing import Iterator


class RaydsconvError(Exception):
    """Base class of every error raydsconv raises on purpose."""


class InvalidArgumentError(RaydsconvError, ValueError):
    """An argument or an input path is unusable (the CLI turns this into exit code 2)."""


class ManifestError(RaydsconvError):
    """A converted dataset on disk is missing, damaged, or of an unknown version."""


class CorruptDatasetError(ManifestError):
    """A dataset's files disagree with its manifest, or a stored sample cannot be read back; the
    message names the dataset, the file and, where known, the sample."""


class ConversionError(RaydsconvError):
    """The conversion itself failed (a bad input in strict mode, a broken pipeline)."""


class UnsupportedFormatError(InvalidArgumentError):
    """A format name that no registered format answers to."""


class OutputLockedError(ConversionError):
    """Another conversion holds the output's lock."""


class OutputWriteError(ConversionError, OSError):
    """The output cannot be written: its disk is full, or the place is read-only or not ours to write.
    An OSError with the errno and the file (``errno``, ``filename``); its message is one line naming
    the file and what to do. The original error is its ``__cause__``."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        OSError.__init__(self, message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):  # pickled whole: it travels from a Ray task to the driver
        return type(self), (self.args[0], self.errno, self.filename)


class ClusterUnreachableError(RaydsconvError, ConnectionError):
    """No Ray cluster answers at the address given (``--address``, ``address=``, ``RAY_ADDRESS``)."""


class RayStartError(RaydsconvError):
    """An embedded Ray did not start on this machine (its temporary folder, its ports, its memory)."""


class ConversionInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a conversion; what was written is kept, and the same command resumes.
    A KeyboardInterrupt, so that Ctrl-C in Python or Jupyter behaves as usual."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number  # 130 for SIGINT, 143 for SIGTERM, as shells report them


# What to do about an OSError met while writing the output, by errno.
_REMEDIES = {
    _errno.ENOSPC: "free some space there (or choose an output with more room), then run the same command "
                   "again to resume",
    _errno.EDQUOT: "free some of your quota there (or choose another output), then run the same command "
                   "again to resume",
    _errno.EROFS: "choose a writable output",
    _errno.EACCES: "choose an output you may write to, or change its permissions",
    _errno.EPERM: "choose an output you may write to, or change its permissions",
}


def output_error(error: OSError, path: object) -> OutputWriteError:
    """``error``, met while writing ``path`` of the output, as one line: the file, what went wrong
    (the system's words for the errno, not a library's), and what to do."""
    what = os.strerror(error.errno).lower() if error.errno in _errno.errorcode else str(error)
    remedy = _REMEDIES.get(error.errno, "check the output's file system, then run the same command again")
    return OutputWriteError(f"{path}: {what}; {remedy}", error.errno, str(path))


@contextmanager
def writing(path: object) -> Iterator[None]:
    """OSErrors inside the block become an OutputWriteError naming ``path``."""
    try:
        yield
    except OutputWriteError:
        raise  # already names its file
    except OSError as error:
        raise output_error(error, path) from error
