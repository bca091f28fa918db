"""PNG figures: image grids, the paper's panels (Fig. 3/4), latent interpolations, temperatures,
and flow-noise draws of one z (what the latent controls).

Every figure function takes `model` as any of
  * a `VAPNEV` (wrapped in `vapnev_tf.export.VapnevModule`, i.e. the export's own functions),
  * a `VapnevModule`, or
  * a SavedModel written by `vapnev_tf.export` and loaded with `tf.saved_model.load`,
and reaches it only through the exported endpoints (`Endpoints`), so a figure made from a run
directory and one made from its export are the same for the same seed. Images are uint8
`(N, H, W, C)` numpy arrays (or tensors); figures are uint8 `(H', W', C)` arrays; `save_png` writes
them. Seeds are Python ints (int64 range), as in the export's signatures.
"""
import io
import os
import uuid

import numpy as np
from PIL import Image
import tensorflow as tf

from vapnev_tf import export as export_lib
from vapnev_tf import image_grids
from vapnev_tf import validation
from vapnev_tf.image_grids import image_grid
from vapnev_tf.image_grids import side_by_side
from vapnev_tf.image_grids import square_grid_shape
from vapnev_tf.model import VAPNEV



class Endpoints:
  """Numpy-in/numpy-out access to the export's endpoints of a model (see the module docstring).

  Attributes:
    has_vae: whether reconstruct/encode/decode exist (False for "realnvp", "vapnev_fixed_z").
    image_shape: `(H, W, C)`.
    latent_dim: size of z (None without a VAE).
  """

  def __init__(self, source):
    if isinstance(source, VAPNEV):
      source = export_lib.VapnevModule(source)
    if isinstance(source, export_lib.VapnevModule):
      self._functions = {name: getattr(source, name) for name in source.signature_names}
    elif hasattr(source, "signatures") and "sample" in getattr(source, "signatures", {}):
      self._functions = dict(source.signatures)
    else:
      raise ValueError("model must be a vapnev_tf.VAPNEV, a vapnev_tf.export.VapnevModule or a "
                       "SavedModel exported by vapnev_tf.export (tf.saved_model.load(dir)), got "
                       f"{type(source).__name__}.")
    self.has_vae = "decode" in self._functions
    sample = self._functions["sample"]
    if isinstance(source, export_lib.VapnevModule):
      self.image_shape = tuple(source.model.config.image_shape)
      self.latent_dim = source.model.config.latent_dim if self.has_vae else None
    else:
      self.image_shape = tuple(sample.structured_outputs["images"].shape[1:].as_list())
      self.latent_dim = (self._functions["decode"].structured_input_signature[1]["z"].shape[-1]
                         if self.has_vae else None)

  def _call(self, name, **inputs):
    if name not in self._functions:
      if self.has_vae:  # an export written before this signature existed
        raise ValueError(f"this export has no {name}() signature (it holds "
                         f"{sorted(self._functions)}); export the run again with vapnev_tf.export.")
      raise ValueError(f"{name}() needs a VAE; this model (no latent z) exports only "
                       f"{sorted(self._functions)}.")
    return self._functions[name](**inputs)

  def sample(self, n: int, temperature: float, seed: int) -> np.ndarray:
    """`n` random images, uint8 `(n, H, W, C)`."""
    out = self._call("sample", num_samples=tf.constant(n, tf.int32),
                     temperature=tf.constant(temperature, tf.float32), seed=_seed(seed))
    return out["images"].numpy()

  def sample_mean(self, n: int, seed: int) -> np.ndarray:
    """`n` images on the mu_y path: z ~ N(0, I) from `seed`, decoded (`use_mean_y`)."""
    if not self.has_vae:
      raise ValueError("use_mean_y needs a VAE; a model without a latent z exports no decode().")
    z = tf.random.stateless_normal([n, self.latent_dim], seed=export_lib.stateless_seed(seed))
    return self.decode(z.numpy())

  def reconstruct(self, images, seed: int) -> np.ndarray:
    return self._call("reconstruct", images=tf.constant(images, tf.uint8),
                      seed=_seed(seed))["images"].numpy()

  def encode(self, images):
    """(mu_z, sigma_z), each float32 `(B, latent_dim)`."""
    out = self._call("encode", images=tf.constant(images, tf.uint8))
    return out["mu_z"].numpy(), out["sigma_z"].numpy()

  def decode(self, z) -> np.ndarray:
    """The mu_y-path images of z `(B, latent_dim)`, uint8."""
    return self._call("decode", z=tf.constant(z, tf.float32))["images"].numpy()

  def sample_from_z(self, z, temperature: float, seed: int) -> np.ndarray:
    """One draw of p(x|z) per row of z `(B, latent_dim)` at `temperature` on sigma_y, uint8."""
    return self._call("sample_from_z", z=tf.constant(z, tf.float32),
                      temperature=tf.constant(temperature, tf.float32),
                      seed=_seed(seed))["images"].numpy()


def endpoints(model) -> Endpoints:
  """`model` (see the module docstring) as `Endpoints`; an `Endpoints` is returned as is."""
  return model if isinstance(model, Endpoints) else Endpoints(model)


# ---------------------------------------------------------------------------------------- grids


# -------------------------------------------------------------------------------------- figures


def samples_grid(model, num: int, temperature: float, seed: int, use_mean_y: bool = False,
                 pad: int = 1) -> np.ndarray:
  """`num` random samples in a square grid (`use_mean_y`: z ~ N(0, I) decoded on the mu_y path)."""
  ep = endpoints(model)
  validation.check_int("num", num, 1)
  images = ep.sample_mean(num, seed) if use_mean_y else ep.sample(num, temperature, seed)
  return image_grid(images, *square_grid_shape(num), pad=pad)


def paper_panel(model, images_uint8, seed, *, temperature: float = 1.0, pad: int = 1,
                gap: int | None = None) -> np.ndarray:
  """Fig. 3/4 of the paper: originals | reconstructions | random samples, three square grids.

  Reconstructions follow Sec. 3.5 (z ~ q(z|x), y ~ N(mu_y, sigma_y)) with `seed`; the N samples
  (Sec. 3.4, `temperature`) use `seed + 1`. A "realnvp" model has no reconstructions: originals |
  samples.

  Args:
    model: see the module docstring.
    images_uint8: uint8 `(N, H, W, C)` test images.
    seed: int.
    temperature: of the samples (1 is the model itself).
    pad: white pixels around each image; gap: white columns between the grids (default W / 2).

  Returns:
    uint8 `(H', W', C)`.
  """
  ep = endpoints(model)
  images = image_grids.as_uint8_images(images_uint8, "images_uint8", ep.image_shape)
  validation.check_int("seed", seed, 0)
  n = images.shape[0]
  shape = square_grid_shape(n)
  grids = [image_grid(images, *shape, pad=pad)]
  if ep.has_vae:
    grids.append(image_grid(ep.reconstruct(images, seed), *shape, pad=pad))
  grids.append(image_grid(ep.sample(n, temperature, seed + 1), *shape, pad=pad))
  return side_by_side(grids, gap=max(4, ep.image_shape[1] // 2) if gap is None else gap)


def interpolate_latents(z_a, z_b, steps: int, method: str = "slerp") -> np.ndarray:
  """`steps` points from z_a to z_b (both ends included): `(B, steps, latent)` float32.

  "linear": (1 - t) z_a + t z_b. "slerp": spherical interpolation (White, 2016), which keeps the
  norm typical of N(0, I) samples; it falls back to linear for (anti-)parallel vectors.
  """
  if method not in ("slerp", "linear"):
    raise ValueError(f"method must be 'slerp' or 'linear', got {method!r}.")
  validation.check_int("steps", steps, 2)
  z_a, z_b = np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)
  t = np.linspace(0.0, 1.0, steps)[None, :, None]  # (1, steps, 1)
  a, b = z_a[:, None], z_b[:, None]  # (B, 1, latent)
  linear = (1.0 - t) * a + t * b
  if method == "linear":
    return linear.astype(np.float32)
  norms = np.linalg.norm(z_a, axis=-1) * np.linalg.norm(z_b, axis=-1)
  cos = np.clip(np.sum(z_a * z_b, axis=-1) / np.maximum(norms, 1e-12), -1.0, 1.0)
  omega = np.arccos(cos)[:, None, None]  # (B, 1, 1)
  sin = np.sin(omega)
  safe = np.where(sin > 1e-6, sin, 1.0)
  slerp = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / safe
  return np.where(sin > 1e-6, slerp, linear).astype(np.float32)


def interpolation_rows(model, images_a, images_b, steps: int, seed=None, *,
                       method: str = "slerp", pad: int = 1) -> np.ndarray:
  """One row per pair: a | decode(z_0) ... decode(z_{steps-1}) | b, z_t between mu_z(a), mu_z(b).

  Deterministic: mu_z of the bin-centred images (the `encode` endpoint), interpolated by
  `interpolate_latents(method)`, decoded on the mu_y path (the `decode` endpoint). `seed` is
  accepted for a uniform interface and unused.

  Returns:
    uint8 grid of `len(images_a)` rows and `steps + 2` columns.
  """
  del seed  # deterministic path
  ep = endpoints(model)
  a = image_grids.as_uint8_images(images_a, "images_a", ep.image_shape)
  b = image_grids.as_uint8_images(images_b, "images_b", ep.image_shape)
  if a.shape[0] != b.shape[0]:
    raise ValueError(f"images_a and images_b must hold as many images, got {a.shape[0]} and "
                     f"{b.shape[0]}.")
  z = interpolate_latents(ep.encode(a)[0], ep.encode(b)[0], steps, method)  # (B, steps, latent)
  decoded = ep.decode(z.reshape(-1, z.shape[-1])).reshape((a.shape[0], steps) + ep.image_shape)
  rows = np.concatenate([a[:, None], decoded, b[:, None]], axis=1)  # (B, steps + 2, H, W, C)
  return image_grid(rows.reshape((-1,) + ep.image_shape), a.shape[0], steps + 2, pad=pad)


def temperature_rows(model, temperatures, per_row: int, seed: int, *, pad: int = 1) -> np.ndarray:
  """One row of `per_row` samples per temperature, all rows from the same seed.

  With one seed the rows share z and the base noise, so a column shows one sample as the
  temperature on sigma_y grows (Sec. 3.4; 0 is the mu_y path for the flow likelihoods).
  """
  ep = endpoints(model)
  temperatures = [float(t) for t in temperatures]
  if not temperatures or min(temperatures) < 0:
    raise ValueError(f"temperatures must be a non-empty list of numbers >= 0, got {temperatures}.")
  validation.check_int("per_row", per_row, 1)
  rows = [ep.sample(per_row, t, seed) for t in temperatures]
  return image_grid(np.concatenate(rows, axis=0), len(temperatures), per_row, pad=pad)


def noise_draw_rows(model, images_uint8, draws: int, temperature: float, seed: int, *,
                    pad: int = 1) -> np.ndarray:
  """What the latent controls: one row per image, x | decode(z) | `draws` samples of p(x|z).

  z = mu_z of the bin-centred image (the `encode` endpoint), the same z for the whole row;
  decode(z) is its mu_y path (Sec. 3.4 with y = mu_y) and each draw is x = f_z^{-1}(y),
  y ~ N(mu_y, (temperature sigma_y)^2) (Eq. 23-27 with z given; the `sample_from_z` endpoint, one
  call for the whole grid with `seed`, so every draw has its own flow noise). What stays fixed
  along a row is what z decides; what changes is left to the flow's noise.

  Returns:
    uint8 grid of `len(images_uint8)` rows and `draws + 2` columns.
  """
  ep = endpoints(model)
  if not ep.has_vae:
    raise ValueError("draws needs a latent z; this model (realnvp or vapnev_fixed_z) has no "
                     "encoder, so there is no z to hold fixed.")
  images = image_grids.as_uint8_images(images_uint8, "images_uint8", ep.image_shape)
  validation.check_int("draws", draws, 1)
  temperature = validation.check_temperature(temperature)
  validation.check_int("seed", seed, 0)
  mu_z = ep.encode(images)[0]  # (B, latent)
  means = ep.decode(mu_z)
  sampled = ep.sample_from_z(np.repeat(mu_z, draws, axis=0), temperature, seed)
  sampled = sampled.reshape((images.shape[0], draws) + ep.image_shape)
  rows = np.concatenate([images[:, None], means[:, None], sampled], axis=1)  # (B, draws + 2, ...)
  return image_grid(rows.reshape((-1,) + ep.image_shape), images.shape[0], draws + 2, pad=pad)


# ------------------------------------------------------------------------------------------- IO


def save_png(array, path: str) -> str:
  """Writes uint8 `(H, W, C)` (C in 1, 3, 4) or `(H, W)` pixels as a PNG, atomically; returns path.

  Pillow encodes; the bytes go to a temporary file renamed over `path` (tf.io.gfile, so remote
  file systems work too). C = 1 is written as 8-bit grayscale.
  """
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise ValueError(f"save_png needs uint8 pixels, got dtype {array.dtype}.")
  if array.ndim == 3 and array.shape[2] == 1:
    array = array[:, :, 0]
  if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
    raise ValueError(f"save_png needs an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, got "
                     f"shape {array.shape}.")
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  path = os.fspath(path)
  check_png_path(path)
  parent = os.path.dirname(path)
  if parent:
    tf.io.gfile.makedirs(parent)
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(buffer.getvalue())
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except (OSError, tf.errors.OpError) as e:  # the temporary file never outlives a failed write
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise ValueError(f"cannot write the PNG {path!r}: {type(e).__name__}: "
                     f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from e
  return path


def check_png_path(path: str) -> None:
  """ValueError unless `path` can become a PNG file: an existing directory (or a parent that is a
  file) cannot."""
  path = os.fspath(path)
  if tf.io.gfile.isdir(path):
    raise ValueError(f"out {path!r} is an existing directory; give the path of a .png file, e.g. "
                     f"{os.path.join(path, 'figure.png')!r}.")
  parent = os.path.dirname(path)
  if parent and tf.io.gfile.exists(parent) and not tf.io.gfile.isdir(parent):
    raise ValueError(f"out {path!r}: its parent {parent!r} is a file, not a directory.")


# -------------------------------------------------------------------------------------- helpers


def _seed(seed) -> tf.Tensor:
  validation.check_int("seed", seed, 0)
  return tf.constant(int(seed), tf.int64)
