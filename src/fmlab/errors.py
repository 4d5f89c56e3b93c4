"""Errors that end a command with a one-line message and exit status 2."""


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
    """Work was interrupted (Ctrl+C); what finished is saved and can be resumed."""
