"""vapnev_tf: VAPNEV (Agrawal & Dukkipati), a VAE whose p(x|z) is an exact conditional real-NVP flow."""
from vapnev_tf import console

# TensorFlow, TFP and Keras are first imported here, quietly (`vapnev_tf.console`;
# VAPNEV_TF_LOGS=all keeps TensorFlow's own logs).
with console.quiet_tensorflow_imports():
  from vapnev_tf import data
  from vapnev_tf.config import LIKELIHOODS
  from vapnev_tf.config import ModelConfig
  from vapnev_tf.flow import ConditionalRealNVP
  from vapnev_tf.loading import load_run
  from vapnev_tf.metrics import bits_per_dim
  from vapnev_tf.model import VAPNEV
  from vapnev_tf.model import to_uint8

__version__ = "0.1.0"
__all__ = ["LIKELIHOODS", "ConditionalRealNVP", "ModelConfig", "VAPNEV", "bits_per_dim", "load_run",
           "to_uint8"]
