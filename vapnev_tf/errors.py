"""The package's error types, in the bottom layer so every layer can raise and catch them.

Each is a ValueError or RuntimeError subclass, so callers that catch those keep working; the
CLIs turn them into a one-line message and exit status 1.
"""


class ConfigError(ValueError):
  """The run cannot start: bad or contradicting configuration, unusable run directory."""


class CheckpointError(RuntimeError):
  """Checkpoints exist but none of them can be restored."""


class DatasetUnavailableError(ValueError):
  """A dataset can be obtained neither from local files nor through TFDS."""


class NonFiniteTrainingError(RuntimeError):
  """Training produced only non-finite steps, too many in a row, or a non-finite final bound."""
