"""smu_explain: see what symbolic-music BERT models learn."""

from .errors import SMUCheckpointError, SMUInputError, SMUTrainingError

__version__ = "0.1.0"
__all__ = ["SMUInputError", "SMUCheckpointError", "SMUTrainingError", "__version__"]
