"""The pinned dependency set is what is installed, and TFP and Keras 3 import together."""
import importlib.metadata
import pathlib

import pytest

REQUIREMENTS = pathlib.Path(__file__).resolve().parents[1] / "requirements.txt"


def _pins():
  pins = {}
  for line in REQUIREMENTS.read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name, version = line.split("==")
      pins[name] = version
  return pins


def test_requirements_are_all_pinned():
  pins = _pins()
  assert {"tensorflow", "tf-keras", "tensorflow-probability", "keras"} <= set(pins)


@pytest.mark.parametrize("name,version", sorted(_pins().items()))
def test_installed_version_matches_pin(name, version):
  assert importlib.metadata.version(name) == version


def test_tfp_and_keras3_import_together():
  import keras
  import tensorflow_probability as tfp
  import vapnev_tf

  assert keras.__version__.startswith("3."), "the model must be built on Keras 3"
  assert keras.backend.backend() == "tensorflow"
  assert tfp.bijectors.Bijector is not None
  assert vapnev_tf.__version__
