"""Likelihood objects (`vapnev_tf.likelihoods`), checks on x in p(x|z).log_prob, temperatures and
`to_uint8`; p(x|z) batch broadcasting like a TFP distribution, eager and in tf.function."""
import ast
import inspect

import numpy as np
import pytest
import tensorflow as tf

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf
from vapnev_tf import config as config_lib
from vapnev_tf import likelihoods
from vapnev_tf import model as model_lib

SHAPE = (8, 8, 1)


def _small(likelihood="vapnev", **overrides):
  return vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, likelihood=likelihood, encoder_blocks=2,
                                         **overrides))


@pytest.fixture(scope="module")
def models():
  return {name: _small(name) for name in likelihoods.LIKELIHOODS}


def _x(n, seed=0):
  return ff.pixels((n,) + SHAPE, seed=seed)


# ------------------------------------------------------------------------------ the interface


def test_registry_matches_the_config_names_and_properties():
  assert likelihoods.LIKELIHOODS == config_lib.LIKELIHOODS
  assert set(likelihoods.FLOW_LIKELIHOODS) == set(config_lib.FLOW_LIKELIHOODS)
  for name in likelihoods.LIKELIHOODS:
    cfg = mf.tiny_config(SHAPE, likelihood=name)
    obj = likelihoods.make_likelihood(name, SHAPE)
    assert (obj.needs_vae, obj.uses_flow) == (cfg.has_vae, cfg.uses_flow)
    assert obj.conditional_flow == (name in ("vapnev", "vapnev_fixed_z"))
    assert obj.fixed_latent == (name == "vapnev_fixed_z")
  with pytest.raises(ValueError, match="likelihood must be one of"):
    likelihoods.make_likelihood("mse", SHAPE)


def test_model_never_compares_likelihood_names():
  """model.py asks the likelihood object: no comparison (==, !=, in) touches a likelihood name or
  `config.likelihood`, and no code (docstrings aside) names one."""
  tree = ast.parse(inspect.getsource(model_lib))
  docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                and isinstance(node.body[0], ast.Expr)}
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and id(node) not in docstrings:
      assert node.value not in likelihoods.LIKELIHOODS, node.value
    if isinstance(node, ast.Compare):
      for part in [node.left] + node.comparators:
        assert not (isinstance(part, ast.Attribute) and part.attr == "likelihood"), ast.dump(node)
    if isinstance(node, ast.Attribute) and node.attr in ("has_vae", "uses_flow"):
      assert not (isinstance(node.value, ast.Attribute) and node.value.attr == "config")


def test_likelihood_objects_hold_no_weights_and_the_model_owns_the_layers(models):
  for name, model in models.items():
    assert not any(isinstance(v, (tf.Variable,)) for v in vars(model.likelihood).values())
    assert isinstance(model.likelihood, likelihoods.REGISTRY[name])
    assert hasattr(model, "encoder") == model.likelihood.needs_vae
    assert hasattr(model, "decoder") == (model.likelihood.needs_vae
                                         or model.likelihood.fixed_latent)
    assert hasattr(model, "flow") == model.likelihood.uses_flow
    if model.likelihood.uses_flow:
      assert model.flow.conditional == model.likelihood.conditional_flow


@pytest.mark.parametrize("name", likelihoods.LIKELIHOODS)
def test_mean_image_is_in_range_and_deterministic(models, name):
  model = models[name]
  a = model.sample(3, use_mean_y=True, seed=(1, 2)).numpy()
  b = model.sample(3, use_mean_y=True, seed=(1, 2)).numpy()
  np.testing.assert_array_equal(a, b)
  assert a.shape == (3,) + SHAPE and a.min() >= 0 and a.max() < 256


def test_pixel_logistic_mean_image_is_the_level_of_the_location(models):
  model = models["pixel_logistic"]
  z = model.prior.sample(2, seed=(3, 3))
  loc, _ = model.decode(z)
  expected = np.floor(np.clip(loc.numpy() + 0.5, 0, 255)) + 0.5
  np.testing.assert_allclose(model.decode_images(z), expected)


# ------------------------------------------------------------------------ checks on x (B.1)


@pytest.mark.parametrize("name", likelihoods.LIKELIHOODS)
@pytest.mark.parametrize("value", [300.0, -100.0, np.nan, 256.0])
def test_log_prob_refuses_pixels_outside_0_256(models, name, value):
  model = models[name]
  z = model.prior.sample(2, seed=(1, 1)) if model.has_vae else None
  p = model.p_x_given_z(z)
  x = _x(2).numpy()
  x[1, 0, 0, 0] = value
  with pytest.raises(ValueError, match=r"x must lie in \[0, 256\)"):
    p.log_prob(tf.constant(x))
  graph = tf.function(lambda x: p.log_prob(x))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"x must lie in \[0, 256\)"):
    graph(tf.constant(x))
  # validate_args=False: no value check (the model's bounds check x once on entry).
  unchecked = model.p_x_given_z(z, validate_args=False)
  assert unchecked.log_prob(_x(2)).shape == (2,)


@pytest.mark.parametrize("x,dtype", [
    (np.zeros((2,) + SHAPE, np.int64) + 3, "int64"),
    (tf.zeros((2,) + SHAPE, tf.int64) + 3, "int64"),
    (tf.zeros((2,) + SHAPE, tf.uint8), "uint8"),
    (tf.zeros((2,) + SHAPE, tf.float64) + 3.5, "float64"),
])
def test_log_prob_refuses_wrong_dtypes_naming_them_and_the_fix(models, x, dtype):
  model = models["vapnev"]
  p = model.p_x_given_z(model.prior.sample(2, seed=(1, 1)))
  with pytest.raises(ValueError, match=rf"got (dtype )?(a )?{dtype}.*vapnev_tf\.data\.dequantize"):
    p.log_prob(x)


def test_float64_tensor_into_a_float32_model_is_refused_by_every_entry_point(models):
  model = models["vapnev"]
  x = tf.cast(_x(2), tf.float64)
  for call in (model.encode, model.elbo, model.log_likelihood_bound):
    with pytest.raises(ValueError, match="float64.*vapnev_tf.data.dequantize"):
      call(x)
  with pytest.raises(ValueError, match=r"z must have this model's dtype float32, got a float64"):
    model.p_x_given_z(tf.zeros((1, 8), tf.float64))


# --------------------------------------------------------------------- temperatures (B.2)


@pytest.mark.parametrize("temperature", [-1.0, float("nan"), float("inf"), -1])
def test_sample_refuses_negative_and_non_finite_temperatures(models, temperature):
  model = models["vapnev"]
  x = _x(1)
  with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
    model.sample(2, temperature=temperature, seed=(1, 1))
  with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
    model.reconstruct(x, temperature=temperature, seed=(1, 1))
  with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
    model.p_x_given_z(model.prior.sample(1, seed=(1, 1)), temperature=temperature)
  with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
    model.sample(2, temperature=tf.constant(float(temperature)), seed=(1, 1))
  graph = tf.function(lambda t: model.sample(2, temperature=t, seed=(1, 1)))
  with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be a finite"):
    graph(tf.constant(float(temperature)))


def test_sample_accepts_zero_and_positive_temperatures_in_graphs(models):
  model = models["vapnev"]
  graph = tf.function(lambda t: model.sample(2, temperature=t, seed=(1, 1)))
  for t in (0.0, 0.7):
    np.testing.assert_allclose(graph(tf.constant(t)), model.sample(2, temperature=t, seed=(1, 1)),
                               rtol=1e-5, atol=1e-4)


def test_to_uint8_refuses_non_finite_images():
  images = np.full((1,) + SHAPE, 12.5, np.float32)
  assert vapnev_tf.to_uint8(images).numpy().max() == 12
  for bad in (np.nan, np.inf, -np.inf):
    images[0, 1, 1, 0] = bad
    with pytest.raises(ValueError, match="images must be finite"):
      vapnev_tf.to_uint8(images)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be finite"):
      tf.function(vapnev_tf.to_uint8)(tf.constant(images))
  with pytest.raises(ValueError, match="float pixels"):
    vapnev_tf.to_uint8(np.zeros((1,) + SHAPE, np.uint8))


# ------------------------------------------------------------- TFP-style batch shapes (C)


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("name", likelihoods.VAE_LIKELIHOODS)
def test_log_prob_broadcasts_x_against_z_like_tfp(models, mode, name):
  model = models[name]
  run = (lambda f, *a: f(*a)) if mode == "eager" else (lambda f, *a: tf.function(f)(*a))
  x = _x(2)
  z = model.prior.sample([3, 2], seed=(1, 1))  # (k, B, L)
  p = model.p_x_given_z(z)
  assert p.batch_shape == (3, 2) and p.event_shape == SHAPE
  np.testing.assert_array_equal(p.batch_shape_tensor(), [3, 2])
  got = run(lambda z, x: model.p_x_given_z(z).log_prob(x), z, x)
  assert got.shape == (3, 2)
  by_hand = [model.p_x_given_z(z[i]).log_prob(x) for i in range(3)]
  np.testing.assert_allclose(got, np.stack(by_hand), rtol=1e-5)
  z3 = z[:, 0]  # (3, L) with x (1, H, W, C) -> (3,)
  got3 = run(lambda z, x: model.p_x_given_z(z).log_prob(x), z3, x[:1])
  assert got3.shape == (3,)
  np.testing.assert_allclose(got3, np.stack(by_hand)[:, 0], rtol=1e-5)
  samples = run(lambda z: model.p_x_given_z(z).sample(4, seed=(2, 2)), z)
  assert samples.shape == (4, 3, 2) + SHAPE
  assert p[1:].batch_shape == (2, 2)  # slicing slices z
  np.testing.assert_allclose(p[1:, 0].log_prob(x[:1]), np.stack(by_hand)[1:, 0], rtol=1e-5)


def test_log_prob_static_shapes_in_a_graph_with_unknown_batches(models):
  model = models["vapnev"]
  spec = [tf.TensorSpec([None, None, 8], tf.float32), tf.TensorSpec([None] + list(SHAPE))]
  graph = tf.function(lambda z, x: model.p_x_given_z(z).log_prob(x), input_signature=spec)
  assert graph.get_concrete_function().structured_outputs.shape.as_list() == [None, None]
  z = model.prior.sample([3, 2], seed=(1, 1))
  np.testing.assert_allclose(graph(z, _x(2)), model.p_x_given_z(z).log_prob(_x(2)), rtol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError):
    graph(z, _x(3))  # batches (3, 2) and (3,) do not broadcast


@pytest.mark.parametrize("name", ["realnvp", "vapnev_fixed_z"])
def test_a_model_without_a_latent_has_p_x_with_an_empty_batch_taking_any_x_batch(models, name):
  model = models[name]
  p = model.p_x_given_z(None)
  assert p.batch_shape == () and p.event_shape == SHAPE
  x = tf.reshape(_x(6), (2, 3) + SHAPE)
  got = p.log_prob(x)
  assert got.shape == (2, 3)
  np.testing.assert_allclose(tf.reshape(got, [-1]), p.log_prob(_x(6)), rtol=1e-6)


@pytest.mark.parametrize("name", ["vapnev", "realnvp", "vapnev_fixed_z"])
def test_log_prob_and_sample_agree_in_eager_function_and_xla(models, name):
  """Every execution regime gives the same density (TFP runs its tests in each). Samples agree
  between eager and tf.function; under XLA the stateless RNG may pick another algorithm, so its
  samples are checked for range and a finite density instead."""
  model = models[name]
  x = _x(2)
  z = model.prior.sample([2], seed=(3, 3)) if model.has_vae else None

  def log_prob(x):
    return model.p_x_given_z(z, validate_args=False).log_prob(x)

  def sample():
    return model.p_x_given_z(z).sample(seed=(4, 4))

  eager = log_prob(x)
  for jit in (False, True):
    np.testing.assert_allclose(tf.function(log_prob, jit_compile=jit)(x), eager, rtol=1e-4,
                               err_msg=f"jit_compile={jit}")
  np.testing.assert_allclose(tf.function(sample)(), sample(), rtol=1e-4, atol=1e-3)
  xla_samples = tf.function(sample, jit_compile=True)()
  assert xla_samples.shape == sample().shape
  inside = tf.clip_by_value(xla_samples, 0.0, 255.9)
  assert np.all(np.isfinite(log_prob(inside)))
