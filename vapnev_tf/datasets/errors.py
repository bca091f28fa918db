"""The error every data source raises when a named dataset cannot be obtained."""


class DatasetUnavailableError(ValueError):
  """A dataset can be obtained neither from local files nor through TFDS."""
