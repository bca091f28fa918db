"""`SharedLatentTrunk`: one z-deconvolution stack for every coupling of the flow.

Our extension, off the paper (ModelConfig.conditioning="shared"). In the paper (Sec. 3.2, 4.2)
every coupling grows z to its own resolution with its own l2 and m2 deconvolution nets. The shared
trunk runs ONE such stack per `ConditionalRealNVP.bijector(z)` call and hands every coupling the
ReLU features at the coupling's resolution; each coupling keeps its own Eq. 16 multipliers and
only adds a 1x1 convolution head for l2 and m2 (`CouplingNetwork(conditioning="shared")`).

The stack follows the one resolution rule of `vapnev_tf.sizing` (docs/design.md §5): a dense
projection of z to the smallest map of the ceil-halving walk of the largest resolution, then one
stride-2 transposed convolution per doubling, centre-cropped to the walk's size. Every resolution
a coupling needs must lie on that walk (true for the squeeze-based layouts: H_s = H / 2**s).
"""
import keras
import tensorflow as tf

from vapnev_tf import sizing
from vapnev_tf.layers.coupling_network import centre_crop


def resolution_key(height: int, width: int) -> str:
  """The key of the features at `(height, width)` in the trunk's output dict: "HxW"."""
  return f"{int(height)}x{int(width)}"


class SharedLatentTrunk(keras.layers.Layer):
  """z `(N, latent_dim)` -> `{resolution_key(h, w): (N, h, w, filters)}` for every needed (h, w).

  Args:
    filters: channels of every feature map (the flow's first-scale filters).
    resolutions: the `(h, w)` the couplings act on (any order, duplicates allowed).
  """

  def __init__(self, filters: int, resolutions, **kwargs):
    super().__init__(**kwargs)
    wanted = sorted({(int(h), int(w)) for h, w in resolutions}, key=lambda r: r[0] * r[1])
    if not wanted:
      raise ValueError("SharedLatentTrunk: resolutions must name at least one (h, w), got none.")
    top_h, top_w = wanted[-1]
    num_up = sizing.halvings_to_reach(max(top_h, top_w))
    small_h, small_w = wanted[0]
    while True:  # Walk further down while the smallest wanted map is below the walk's start.
      start, _ = sizing.upsampling_plan(top_h, top_w, num_up)
      if start[0] <= small_h and start[1] <= small_w or start == (1, 1):
        break
      num_up += 1
    self.start, self.targets = sizing.upsampling_plan(top_h, top_w, num_up)
    walk = [self.start] + list(self.targets)
    for h, w in wanted:
      if (h, w) not in walk:
        raise ValueError(f"SharedLatentTrunk: resolution {(h, w)} is not on the ceil-halving walk "
                         f"{walk} of the largest resolution {(top_h, top_w)}; expected sizes "
                         "H / 2**k (docs/design.md §5).")
    self.resolutions = tuple(wanted)
    self._wanted_index = {walk.index(r): r for r in wanted}
    self.filters = int(filters)
    self.project = keras.layers.Dense(self.start[0] * self.start[1] * self.filters,
                                      dtype=self.dtype_policy, name="project")
    self.num_up = max(self._wanted_index)  # stop after the largest wanted map
    for i in range(self.num_up):
      setattr(self, f"up{i}", keras.layers.Conv2DTranspose(
          self.filters, 3, strides=2, padding="same", dtype=self.dtype_policy, name=f"up{i}"))

  def call(self, z):
    h = tf.nn.relu(self.project(z))
    h = tf.reshape(h, [-1, self.start[0], self.start[1], self.filters])
    features = {}
    if 0 in self._wanted_index:
      features[resolution_key(*self.start)] = h
    for i in range(self.num_up):
      th, tw = self.targets[i]
      h = centre_crop(tf.nn.relu(getattr(self, f"up{i}")(h)), th, tw)
      if i + 1 in self._wanted_index:
        features[resolution_key(th, tw)] = h
    return features
