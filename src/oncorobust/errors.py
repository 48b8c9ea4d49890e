"""User-facing errors. Each names the file or config key at fault and what to do about it."""


class OncorobustError(Exception):
    """Base of every error a user of oncorobust is meant to read."""


class ConfigError(OncorobustError):
    """A config key is missing, has the wrong type or an impossible value."""


class DicomError(OncorobustError):
    """A DICOM file cannot be read or decoded. The message names the file and the reason."""


class DataError(OncorobustError):
    """The data set as a whole is unusable: no labels, one class in a split, leakage, bad ROI..."""


class ModelError(OncorobustError):
    """A model cannot be built: missing weights, unsupported input size or architecture."""


class AttackError(OncorobustError, ValueError):
    """An attack was called with unusable arguments, or the model misbehaved during it (the
    message names the argument or what the model returned)."""


class CardError(OncorobustError):
    """A robustness card cannot be written or read: a missing or malformed input table."""
