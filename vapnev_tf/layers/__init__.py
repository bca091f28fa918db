"""Keras 3 layers that own every weight of the flow; the bijectors only call them."""
from vapnev_tf.layers.coupling_network import CONDITIONINGS
from vapnev_tf.layers.coupling_network import CouplingNetwork
from vapnev_tf.layers.coupling_network import LatentDeconvNet
from vapnev_tf.layers.coupling_network import ResidualNet
from vapnev_tf.layers.latent_trunk import SharedLatentTrunk
from vapnev_tf.layers.latent_trunk import resolution_key
from vapnev_tf.layers.precision import COMPUTE_DTYPES

__all__ = ["COMPUTE_DTYPES", "CONDITIONINGS", "CouplingNetwork", "LatentDeconvNet", "ResidualNet",
           "SharedLatentTrunk", "resolution_key"]
