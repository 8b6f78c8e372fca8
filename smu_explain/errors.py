"""Typed errors that the app and CLI catch and show as plain messages."""


class SMUInputError(ValueError):
    """Bad user input (a file that is not usable music, a bad label file...).

    The message always names the offending file and the reason.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SMUCheckpointError(SMUInputError):
    """A model/checkpoint folder that is missing, broken or unsafe to load."""


class SMUTrainingError(RuntimeError):
    """Training cannot go on (NaN/inf loss, ...); the last good checkpoint is kept."""


class SMUWriteError(SMUInputError):
    """An output could not be written (disk full, read-only folder, ...); the previous
    version of the file is left as it was."""
