"""TFP bijectors of the conditional flow f_z (Sec. 3.1-3.2, 4.1-4.2)."""
from vapnev_tf.bijectors.chain import InverseFlow
from vapnev_tf.bijectors.coupling import ConditionalAffineCoupling
from vapnev_tf.bijectors.coupling import MASK_TYPES
from vapnev_tf.bijectors.coupling import checkerboard_mask
from vapnev_tf.bijectors.factor_out import FactorOut
from vapnev_tf.bijectors.preprocessing import pixels_to_logits
from vapnev_tf.bijectors.squeeze import Squeeze

__all__ = ["ConditionalAffineCoupling", "FactorOut", "InverseFlow", "MASK_TYPES", "Squeeze",
           "checkerboard_mask", "pixels_to_logits"]
