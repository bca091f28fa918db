"""Keras 3 layers that own every weight of the flow; the bijectors only call them."""
from vapnev_tf.layers.coupling_network import CouplingNetwork
from vapnev_tf.layers.coupling_network import LatentDeconvNet
from vapnev_tf.layers.coupling_network import ResidualNet

__all__ = ["CouplingNetwork", "LatentDeconvNet", "ResidualNet"]
