"""How much the latent z carries: the figures that measure posterior collapse (docs/design.md §13).

    result = evaluate_latent(model, test_x, test_labels=..., train_images=..., train_labels=...,
                             judge=..., seed=0, temperature=0.8)

On N test images x_i (dequantised floats `(N, H, W, C)` in [0, 256)), with one z_i ~ q(z|x_i)
each:

  KL            mean_i KL(q(z|x_i) || p(z)) in nats/image (analytic for the Gaussian posterior,
                log q(z_i|x_i) - log p(z_i) for IAF: the model's own ELBO term).
  active units  Burda et al. 2016: dimension d is active when Var_i(E_q[z_d|x_i]) > 0.01; the
                count and its fraction of latent_dim. E_q[z|x] is `model.encode_center` (the
                Gaussian's mean; for IAF, mu_z carried through the steps).
  MI            He et al. 2019's estimate of I(x; z) under q(z|x) p_data(x):
                    mean_i [log q(z_i|x_i) - log q(z_i)],  log q(z_i) = logsumexp_j log q(z_i|x_j)
                    - log N  (the aggregate posterior as the mixture of the N posteriors).
                It lies in [0, log N] up to sampling noise; 0 exactly when q(z|x) ignores x.
  conditioning  VLAE's measure of what the latent saves the decoder: bits/dim of -log p(x_i|z_i)
  gap           ("own") against -log p(x_i|z_{i+1 mod N}) ("other": the z of the next image), and
                other - own (> 0: the flow uses z; 0: it ignores it). Variational dequantisation
                adds -log q(u|x_int) to both, as in the ELBO.
  linear probe  softmax regression (scikit-learn's LogisticRegression on standardised features)
                fit on the train split, accuracy on the test images: on `encode_center`, and on
                raw pixels for reference. Needs labels.
  agreement     the judge (`vapnev_tf.judge`) classifies each reconstruction from z_i: share put
                in the original's class, on the mean-y reconstruction f_z^{-1}(mu_y) and on a
                sample at `temperature`. Needs labels and a judge.
"""
import math
import time
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import data as data_lib
from vapnev_tf import judge as judge_lib
from vapnev_tf import seeds
from vapnev_tf.metrics import bits_per_dim
from vapnev_tf.model import to_uint8

tfd = tfp.distributions

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016's variance threshold
NO_LABELS = "no labels"


def active_units(centers, threshold: float = ACTIVE_THRESHOLD) -> dict:
  """Burda et al.'s active units of posterior centres `(N, L)`: {"active_units": count,
  "active_fraction": count / L, "unit_variances": the L variances over the N images}."""
  centers = np.asarray(centers, np.float64)
  if centers.ndim != 2 or centers.shape[0] < 2:
    raise ValueError(f"centers must be (N, latent_dim) with N >= 2, got shape {centers.shape}.")
  variances = centers.var(axis=0)
  count = int(np.sum(variances > threshold))
  return {"active_units": count, "active_fraction": count / centers.shape[1],
          "unit_variances": variances.tolist()}


def gaussian_log_q_matrix(z, mu, sigma) -> np.ndarray:
  """log N(z_i; mu_j, diag sigma_j^2) for every pair: `(M, N)` float64 from z `(M, L)` and
  mu, sigma `(N, L)` (three matrix products, no `(M, N, L)` array)."""
  z, mu, sigma = (np.asarray(a, np.float64) for a in (z, mu, sigma))
  precision = 1.0 / sigma ** 2  # (N, L)
  quadratic = ((z ** 2) @ precision.T - 2.0 * z @ (mu * precision).T
               + np.sum(mu ** 2 * precision, axis=1)[None, :])
  log_norm = -np.sum(np.log(sigma), axis=1)[None, :] - 0.5 * z.shape[1] * math.log(2 * math.pi)
  return log_norm - 0.5 * quadratic


def mutual_information(log_q_own, log_q_rows, num_posteriors: int, chunk: int = 1000) -> float:
  """He et al.'s I(x; z) estimate in nats: mean_i [log q(z_i|x_i) - log q(z_i)].

  Args:
    log_q_own: `(N,)` log q(z_i|x_i) of each image's own draw.
    log_q_rows: callable (i0, i1) -> `(i1 - i0, num_posteriors)` log q(z_i|x_j) for the draws
      i0..i1-1 against every posterior j (e.g. `gaussian_log_q_matrix`).
    num_posteriors: N of the aggregate q(z) = (1/N) sum_j q(z|x_j).
    chunk: rows evaluated at once.
  """
  log_q_own = np.asarray(log_q_own, np.float64)
  log_aggregate = np.empty_like(log_q_own)
  for i0 in range(0, len(log_q_own), chunk):
    rows = np.asarray(log_q_rows(i0, min(i0 + chunk, len(log_q_own))), np.float64)
    peak = rows.max(axis=1, keepdims=True)
    log_aggregate[i0:i0 + len(rows)] = (peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
                                        - math.log(num_posteriors))
  return float(np.mean(log_q_own - log_aggregate))


def conditioning_gap(log_px_own, log_px_other, image_shape) -> dict:
  """{"own_bpd", "other_bpd", "conditioning_gap_bpd" = other - own} from per-image
  log p(x_i|z_i) and log p(x_i|z_other) in nats (larger gap: the latent saves more bits)."""
  own = float(bits_per_dim(np.mean(np.asarray(log_px_own, np.float64)), image_shape))
  other = float(bits_per_dim(np.mean(np.asarray(log_px_other, np.float64)), image_shape))
  return {"own_bpd": own, "other_bpd": other, "conditioning_gap_bpd": other - own}


def linear_probe(train_features, train_labels, test_features, test_labels,
                 max_iter: int = 200) -> float:
  """Test accuracy of a softmax regression on standardised features (fit on the train split).

  Features `(N, F)` (flattened when higher-rank); labels integer `(N,)`. The standardisation is
  the train split's mean and standard deviation (constant features stay 0).
  """
  # Deferred: scikit-learn is heavy and only the linear probe needs it.
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.exceptions import ConvergenceWarning  # pylint: disable=g-import-not-at-top
  train = np.asarray(train_features, np.float64).reshape(len(train_features), -1)
  test = np.asarray(test_features, np.float64).reshape(len(test_features), -1)
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  if len(np.unique(train_labels)) < 2:
    raise ValueError(f"train_labels hold {len(np.unique(train_labels))} class; a probe needs at "
                     "least 2.")
  mean, std = train.mean(axis=0), train.std(axis=0)
  std[std == 0] = 1.0
  classifier = LogisticRegression(max_iter=max_iter)
  with warnings.catch_warnings():  # the accuracy is reported either way; max_iter bounds the cost
    warnings.simplefilter("ignore", ConvergenceWarning)
    classifier.fit((train - mean) / std, train_labels)
  return float(np.mean(classifier.predict((test - mean) / std) == test_labels))


# ---------------------------------------------------------------------------- the model's figures


class _Passes:
  """The compiled per-batch passes over one model (traced once per batch shape)."""

  def __init__(self, model):
    self.model = model
    iaf = model.iaf_posterior

    @tf.function(autograph=False)
    def encode(x, seed):
      q = model.encode(x)
      z, log_q = q.experimental_sample_and_log_prob(seed=seed)
      kl = log_q - model.prior.log_prob(z) if iaf else tfd.kl_divergence(q, model.prior)
      outputs = model.encoder(model._encoder_input(x))  # pylint: disable=protected-access
      return z, log_q, kl, model.encode_center(x), outputs

    @tf.function(autograph=False)
    def log_px(x, z_own, z_other, seed):
      x, log_q_u = model.dequantize(x, seed=seed)  # uniform: (x, 0)
      own = model.p_x_given_z(z_own, validate_args=False).log_prob(x) - log_q_u
      other = model.p_x_given_z(z_other, validate_args=False).log_prob(x) - log_q_u
      return own, other

    @tf.function(autograph=False)
    def reconstruct(z, temperature, seed):
      mean = model.sample_from_z(z, use_mean_y=True)
      sample = model.sample_from_z(z, temperature=temperature, seed=seed)
      return to_uint8(mean), to_uint8(sample)

    self.encode, self.log_px, self.reconstruct = encode, log_px, reconstruct
    self.center = tf.function(model.encode_center, autograph=False)


def _batches(n: int, batch_size: int):
  """(batch index, slice, padded index array): every batch padded to `batch_size` rows (by
  repeating its images) so each compiled pass is traced once; callers keep the first rows."""
  for b, i0 in enumerate(range(0, n, batch_size)):
    i1 = min(i0 + batch_size, n)
    yield b, slice(i0, i1), np.resize(np.arange(i0, i1), min(batch_size, n))


def _batch_seed(seed: int, stream: int, index: int) -> tf.Tensor:
  key = tf.random.experimental.stateless_fold_in(tf.constant([seed, seeds.LATENT], tf.int64),
                                                 stream)
  return tf.cast(tf.random.experimental.stateless_fold_in(key, index), tf.int32)


def _encode_all(passes, x, batch_size, seed):
  """Per image: z, log q(z|x), KL, centre and the encoder's outputs, concatenated over batches."""
  parts = []
  for b, rows, padded in _batches(len(x), batch_size):
    z, log_q, kl, center, outputs = passes.encode(tf.constant(x[padded]), _batch_seed(seed, 0, b))
    keep = rows.stop - rows.start
    parts.append((z.numpy()[:keep], log_q.numpy()[:keep], kl.numpy()[:keep],
                  center.numpy()[:keep], [o.numpy()[:keep] for o in outputs]))
  z, log_q, kl, center = (np.concatenate([p[k] for p in parts]) for k in range(4))
  outputs = [np.concatenate([p[4][k] for p in parts]) for k in range(len(parts[0][4]))]
  return z, log_q, kl, center, outputs


def _log_q_rows(model, z, outputs, batch_size):
  """The `mutual_information` row callable: closed form for the Gaussian, else (IAF) q(z|x_j)
  rebuilt from the encoder's outputs for every pair (latent_dim sequential passes each)."""
  if not model.iaf_posterior:
    mu, sigma = outputs[:2]
    return lambda i0, i1: gaussian_log_q_matrix(z[i0:i1], mu, sigma)

  @tf.function(autograph=False)
  def pairs(z_rows, mu, sigma, h):
    rows, cols = tf.shape(z_rows)[0], tf.shape(mu)[0]
    tile = lambda a: tf.reshape(tf.tile(a[None], [rows, 1, 1]), [rows * cols, -1])
    z_tiled = tf.reshape(tf.tile(z_rows[:, None], [1, cols, 1]), [rows * cols, -1])
    q = model.iaf.distribution(tile(mu), tile(sigma), tile(h))
    return tf.reshape(q.log_prob(z_tiled), [rows, cols])

  def rows(i0, i1):
    step = max(1, batch_size // max(1, i1 - i0))
    return np.concatenate([pairs(z[i0:i1], *(o[j0:j0 + step] for o in outputs)).numpy()
                           for j0 in range(0, len(outputs[0]), step)], axis=1)
  return rows


def evaluate_latent(model, test_x, *, test_labels=None, train_images=None, train_labels=None,
                    judge=None, seed: int = 0, temperature: float = 0.8, batch_size: int = 256,
                    probe_max_iter: int = 200, pixel_probe_cache: dict | None = None) -> dict:
  """The latent figures of `model` (a VAE likelihood) on `test_x`; see the module docstring.

  Args:
    model: a `VAPNEV` whose likelihood has a latent (not "realnvp").
    test_x: float32 `(N, H, W, C)` dequantised test images in [0, 256), N >= 2.
    test_labels: int `(N,)` or None ("no labels": probe and agreement fields are None).
    train_images, train_labels: uint8 `(M, H, W, C)` and `(M,)`: the probe's training split.
    judge: a `vapnev_tf.judge.Judge`, or None (agreement fields None).
    seed: keys every z, u and sample drawn (stream `seeds.LATENT`).
    temperature: of the sampled reconstructions (the mean-y one has none).
    batch_size: images per model call.
    probe_max_iter: LogisticRegression's iteration cap.
    pixel_probe_cache: None (compute the pixel probe), or {"dataset", "cache_dir"}: keep its
      accuracy, which depends on the data only, with `vapnev_tf.judge.cached_score`.

  Returns:
    dict: num_images, latent_dim, kl_nats, active_units, active_fraction, unit_variances,
    mi_nats, mi_max_nats (log N, the estimator's ceiling), own_bpd, other_bpd,
    conditioning_gap_bpd, probe_latent_accuracy, probe_pixels_accuracy, probe_train_images,
    judge_test_accuracy, judge_original_accuracy, agreement_mean_y, agreement_sampled,
    temperature, labels (None or "no labels"), seconds, stage_seconds (per stage).
  """
  if not model.has_vae:
    raise ValueError(f"likelihood={model.config.likelihood!r} has no latent z (no encoder); the "
                     "latent figures need a VAE likelihood such as 'vapnev'.")
  test_x = np.asarray(test_x, np.float32)
  n = len(test_x)
  if n < 2:
    raise ValueError(f"test_x holds {n} image(s); the latent figures need at least 2.")
  if test_labels is not None and len(test_labels) != n:
    raise ValueError(f"test_labels holds {len(test_labels)} labels for {n} test images.")
  start = clock = time.time()
  stages = {}

  def lap(name):  # seconds per stage, so the cost of each figure is visible
    nonlocal clock
    stages[name] = round(time.time() - clock, 3)
    clock = time.time()

  passes = _Passes(model)
  image_shape = model.config.image_shape
  z, log_q, kl, centers, outputs = _encode_all(passes, test_x, batch_size, seed)
  lap("encode")
  result = {"num_images": n, "latent_dim": model.config.latent_dim,
            "kl_nats": float(np.mean(kl.astype(np.float64)))}
  result.update(active_units(centers))
  result["mi_nats"] = mutual_information(log_q, _log_q_rows(model, z, outputs, batch_size), n)
  result["mi_max_nats"] = math.log(n)
  lap("mi")
  z_other = np.roll(z, -1, axis=0)  # image i gets the z drawn for image i + 1
  own, other, recon_mean, recon_sample = [], [], [], []
  temperature_t = tf.constant(temperature, model.compute_dtype)
  for b, rows, padded in _batches(n, batch_size):
    keep = rows.stop - rows.start
    lp_own, lp_other = passes.log_px(tf.constant(test_x[padded]), tf.constant(z[padded]),
                                     tf.constant(z_other[padded]), _batch_seed(seed, 1, b))
    own.append(lp_own.numpy()[:keep])
    other.append(lp_other.numpy()[:keep])
    if judge is not None and test_labels is not None:
      mean, sample = passes.reconstruct(tf.constant(z[padded]), temperature_t,
                                        _batch_seed(seed, 2, b))
      recon_mean.append(mean.numpy()[:keep])
      recon_sample.append(sample.numpy()[:keep])
  result.update(conditioning_gap(np.concatenate(own), np.concatenate(other), image_shape))
  lap("flow")
  result.update(_labelled_figures(passes, test_x, centers, test_labels, train_images, train_labels,
                                  judge, recon_mean, recon_sample, seed, batch_size,
                                  probe_max_iter, lap, pixel_probe_cache))
  result["temperature"] = float(temperature)
  result["seconds"] = round(time.time() - start, 3)
  result["stage_seconds"] = stages
  return result


def _labelled_figures(passes, test_x, centers, test_labels, train_images, train_labels, judge,
                      recon_mean, recon_sample, seed, batch_size, probe_max_iter, lap,
                      pixel_probe_cache) -> dict:
  """Probe and agreement fields (None where labels, train images or a judge are missing)."""
  figures = dict.fromkeys(("probe_latent_accuracy", "probe_pixels_accuracy", "probe_train_images",
                           "judge_test_accuracy", "judge_original_accuracy", "agreement_mean_y",
                           "agreement_sampled"))
  figures["labels"] = None
  if test_labels is None or train_labels is None or train_images is None:
    figures["labels"] = NO_LABELS
    return figures
  test_labels = np.asarray(test_labels, np.int64)
  train_images = np.asarray(train_images)
  train_centers = []
  for b, rows, padded in _batches(len(train_images), batch_size):
    x = data_lib.dequantize(train_images[padded], _batch_seed(seed, 3, b))
    train_centers.append(passes.center(x).numpy()[:rows.stop - rows.start])
  lap("probe_features")
  figures["probe_train_images"] = len(train_images)
  figures["probe_latent_accuracy"] = linear_probe(np.concatenate(train_centers), train_labels,
                                                  centers, test_labels, probe_max_iter)
  lap("probe_latent")
  test_pixels = np.floor(test_x).astype(np.uint8)

  def pixel_probe():
    return linear_probe(train_images.astype(np.float32) / 255.0, train_labels,
                        test_pixels.astype(np.float32) / 255.0, test_labels, probe_max_iter)

  if pixel_probe_cache is None:
    figures["probe_pixels_accuracy"] = pixel_probe()
  else:  # it depends on the data only, and costs the most of all the figures
    figures["probe_pixels_accuracy"] = judge_lib.cached_score(
        pixel_probe, (train_images, train_labels, test_pixels, test_labels), name="pixel-probe",
        recipe=f"logistic-standardised-max_iter={probe_max_iter}", **pixel_probe_cache)
  lap("probe_pixels")
  if judge is not None:
    figures["judge_test_accuracy"] = judge.test_accuracy
    figures["judge_original_accuracy"] = float(np.mean(judge.predict(test_pixels) == test_labels))
    figures["agreement_mean_y"] = float(np.mean(
        judge.predict(np.concatenate(recon_mean)) == test_labels))
    figures["agreement_sampled"] = float(np.mean(
        judge.predict(np.concatenate(recon_sample)) == test_labels))
    lap("judge")
  return figures


def summary_line(result: dict) -> str:
  """One line of the figures, e.g. `latent (1000 images): KL 12.3 nats | active 5/32 (0.16) |
  MI 2.10 nats | gap 0.012 bits/dim (3.512 own, 3.524 other) | probe z 0.712, pixels 0.843 |
  judge 0.851: mean-y 0.610, T=0.8 0.552`."""
  parts = [f"KL {result['kl_nats']:.2f} nats",
           f"active {result['active_units']}/{result['latent_dim']} "
           f"({result['active_fraction']:.2f})",
           f"MI {result['mi_nats']:.2f} nats",
           f"gap {result['conditioning_gap_bpd']:.4f} bits/dim ({result['own_bpd']:.3f} own, "
           f"{result['other_bpd']:.3f} other)"]
  if result.get("labels") == NO_LABELS:
    parts.append(NO_LABELS)
  else:
    parts.append(f"probe z {result['probe_latent_accuracy']:.3f}, pixels "
                 f"{result['probe_pixels_accuracy']:.3f}")
    if result.get("agreement_mean_y") is not None:
      parts.append(f"judge {result['judge_test_accuracy']:.3f}: mean-y "
                   f"{result['agreement_mean_y']:.3f}, T={result['temperature']:g} "
                   f"{result['agreement_sampled']:.3f}")
  return f"latent ({result['num_images']} images): " + " | ".join(parts)
