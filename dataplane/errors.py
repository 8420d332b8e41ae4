"""One exception hierarchy for the whole project; the CLI maps it to exit codes.

Exit codes (documented in README.md): 0 success, 1 runtime error, 2 usage error.
Every message is one line naming the object at fault and the place (file offset,
packet index, source line) so that the CLI can print ``error: <message>``.
"""


class DataplaneError(Exception):
    """Base of every error the project raises on purpose. Exit code 1."""

    exit_code = 1

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint


class UsageError(DataplaneError):
    """Bad command line or bad argument from the user. Exit code 2."""

    exit_code = 2


class CaptureError(DataplaneError):
    """A capture file that cannot be read (or written) from some point on.

    ``offset`` is the byte offset in the file and ``index`` the 0-based index of
    the packet record at fault (None when the fault is in a file header).
    """

    def __init__(self, path, message, offset=None, index=None, hint=None):
        where = []
        if offset is not None:
            where.append(f"offset {offset}")
        if index is not None:
            where.append(f"packet {index}")
        loc = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{path}{loc}: {message}", hint)
        self.path = path
        self.offset = offset
        self.index = index


class ProgramError(DataplaneError):
    """A program that cannot be found, checked or compiled (the verifier's reject)."""


class MapError(DataplaneError):
    """A map operation the kernel would refuse (``errno`` holds the error number)."""

    def __init__(self, map_name, message, err=None):
        super().__init__(f"map '{map_name}': {message}")
        self.errno = err
