"""Errors that the CLI reports as one clear message, without a traceback."""


class SslBenchError(Exception):
    """Base class: the message says what went wrong, where, and how to fix it."""


class DataError(SslBenchError):
    """A data file or folder is missing, unreadable or not what was expected."""


class ConfigError(SslBenchError):
    """A configuration file or command-line option is invalid."""


class PluginError(SslBenchError):
    """A plugin is unknown or broke its contract."""


class SslBenchWarning(UserWarning):
    """Work was redone or left out: said as one line (the CLI prints these without the source line)."""


class TrainingError(SslBenchError):
    """Training diverged (a NaN or infinite loss) or cannot go on with the data it was given."""


def require_whole_numbers(settings: object, least: dict[str, int], owner: str) -> None:
    """Raises :class:`ConfigError` for the first field of ``settings`` named in ``least`` that is not a whole
    number at least its bound; ``owner`` names the settings in the message ("clustering setting ...")."""
    for name, bound in least.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < bound:
            raise ConfigError(f"{owner} setting {name} must be a whole number >= {bound}, got {value!r}")


def require_positive(settings: object, names: tuple[str, ...], owner: str) -> None:
    """Raises :class:`ConfigError` for the first field of ``settings`` named in ``names`` that is not above 0 (a
    temperature, a size, a weight that divides)."""
    for name in names:
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{owner} option {name} must be positive, got {getattr(settings, name)!r}")


def require_fractions(settings: object, names: tuple[str, ...], owner: str) -> None:
    """Raises :class:`ConfigError` for the first field of ``settings`` named in ``names`` outside [0, 1] (a momentum,
    a mixing weight)."""
    for name in names:
        if not 0 <= getattr(settings, name) <= 1:
            raise ConfigError(f"{owner} option {name} must lie in [0, 1], got {getattr(settings, name)!r}")
