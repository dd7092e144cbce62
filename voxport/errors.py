"""One error class per stage. The CLI maps each to a one-line message and exit code 2."""


class VoxportError(Exception):
    """A mistake in the input or an unmet requirement; the message says what to do."""

    exit_code = 2


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

    exit_code = 1
