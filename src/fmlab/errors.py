"""Errors that end a command with a one-line message and exit status 2 (interruptions: 128 + signal)."""

import signal


class FmlabError(Exception):
    """Base class: the message names the problem and the fix, on one line."""


class DataError(FmlabError):
    """A data file is missing, unreadable or not what it claims to be."""


class IdxMagicError(DataError):
    """The IDX header's magic number is wrong."""


class IdxShapeError(DataError):
    """The IDX dimensions are impossible or not the expected ones."""


class IdxTruncatedError(DataError):
    """The IDX body is shorter or longer than its header says."""


class GzipError(DataError):
    """The file is not valid gzip data."""


class ChecksumError(DataError):
    """The decompressed content does not match the recorded checksum."""


class DataNotFoundError(DataError):
    """No copy of the data set was found and none could be downloaded."""


class ConfigError(FmlabError):
    """A configuration key or value is invalid."""


class Interrupted(FmlabError):
    """Work was interrupted (Ctrl+C, SIGTERM, SIGHUP); what finished is saved and can be resumed."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so it stops the way Ctrl+C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class OutputError(FmlabError):
    """An output cannot be written there: a read-only place, a full disk, a folder, or one of the inputs."""
