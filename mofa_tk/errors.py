"""Exception types raised by mofa_tk."""


class MofaError(Exception):
    """Base class of every error mofa_tk raises on purpose."""


class BackendUnavailableError(MofaError, RuntimeError):
    """The requested Taichi backend cannot run on this machine."""


class ModelFormatError(MofaError, ValueError):
    """A morphable-model file is truncated, has wrong keys or inconsistent shapes."""


class InputError(MofaError, ValueError):
    """An op argument has the wrong shape, dtype, range or contains NaN/Inf."""
