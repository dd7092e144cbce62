"""One error class per stage, and the exit-code contract the CLI keeps.

Exit codes: 0 success; 1 a verification/parity gate failed; 2 the user's input is wrong (the message says
what to do); 3 voxport itself failed (a bug or an unexpected failure of a library it calls); 130 interrupted.
"""

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class VoxportError(Exception):
    """A mistake in the input or an unmet requirement; the message says what to do."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(VoxportError):
    pass


class ExportError(VoxportError):
    pass


class QuantizeError(VoxportError):
    pass


class AudioError(VoxportError):
    pass


class PackageError(VoxportError):
    pass


class ParityError(VoxportError):
    """Raised only when a caller asks verify to raise; the CLI exits 1 on a failed report."""

    exit_code = EXIT_VERIFY_FAILED


class InternalError(VoxportError):
    """voxport itself failed: not the user's input. The CLI prints one line and exits 3."""

    exit_code = EXIT_INTERNAL
