"""vapnev_tf: VAPNEV (Agrawal & Dukkipati), a VAE whose p(x|z) is an exact conditional real-NVP flow."""
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.metrics import bits_per_dim

__version__ = "0.1.0"
__all__ = ["ConditionalRealNVP", "bits_per_dim"]
