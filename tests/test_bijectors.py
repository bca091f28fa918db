"""Bijector tests in the manner of TFP's bijector_test_util: round trips with the cache bypassed,
inverse log-det = -forward log-det, log-det against slogdet of an autodiff Jacobian, batch ranks,
float32/float64, domain edges, and clear errors."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
from vapnev_tf import bijectors as vb
from vapnev_tf.layers import CouplingNetwork

tfb = tfp.bijectors
DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=1e-4, atol=2e-3), "float64": dict(rtol=1e-9, atol=1e-8)}


def _coupling(mask_type, parity, event_shape, dtype, conditional=True, seed=0):
  h, w, c = event_shape
  out_channels, net_h, net_w = (c, h, w) if mask_type == "checkerboard" else (c // 2, h, w)
  net = CouplingNetwork(out_channels, net_h, net_w, filters=4, num_res_blocks=1,
                        conditional=conditional, dtype=dtype)
  z = ff.latents((2,), dtype) if conditional else None
  bij = vb.ConditionalAffineCoupling(net, mask_type, parity, z, event_shape=event_shape)
  bij.forward(ff.pixels((2,) + event_shape, dtype, low=-2, high=2))  # builds the network
  ff.perturb_multipliers(net, seed)
  return vb.ConditionalAffineCoupling(net, mask_type, parity, z, event_shape=event_shape)


def _cases(dtype):
  """(name, bijector, x) for every bijector type; x has batch shape (2,)."""
  event = (4, 4, 2)
  unit = lambda: ff.pixels((2,) + event, dtype, low=-2.0, high=2.0)
  inner = _coupling("channel", 0, (4, 4, 2), dtype)
  return [
      ("squeeze", vb.Squeeze(), unit()),
      ("checkerboard0", _coupling("checkerboard", 0, event, dtype), unit()),
      ("checkerboard1", _coupling("checkerboard", 1, event, dtype), unit()),
      ("channel0", _coupling("channel", 0, event, dtype), unit()),
      ("channel1", _coupling("channel", 1, event, dtype), unit()),
      ("unconditional", _coupling("checkerboard", 0, event, dtype, conditional=False), unit()),
      ("factor_out", vb.FactorOut(inner, 2), ff.pixels((2, 4, 4, 4), dtype, low=-2, high=2)),
      ("pixels_to_logits", vb.pixels_to_logits(0.05, dtype=dtype), ff.pixels((2,) + event, dtype)),
      ("flow", ff.make_flow((4, 4, 2), dtype=dtype).bijector(ff.latents((2,), dtype)),
       ff.pixels((2, 4, 4, 2), dtype)),
  ]


@pytest.fixture(scope="module", params=DTYPES)
def cases(request):
  return request.param, _cases(request.param)


def test_round_trips_with_cache_bypassed(cases):
  dtype, items = cases
  for name, bij, x in items:
    y = bij.forward(x)
    assert y.dtype == x.dtype, name
    np.testing.assert_allclose(bij.inverse(ff.fresh(y)), x, **TOL[dtype], err_msg=name)
    x2 = bij.inverse(ff.fresh(y))
    np.testing.assert_allclose(bij.forward(ff.fresh(x2)), y, **TOL[dtype], err_msg=name)


def test_inverse_log_det_is_minus_forward(cases):
  dtype, items = cases
  for name, bij, x in items:
    y = bij.forward(x)
    fldj = bij.forward_log_det_jacobian(x, event_ndims=3)
    ildj = bij.inverse_log_det_jacobian(ff.fresh(y), event_ndims=3)
    assert fldj.shape == (2,), name
    np.testing.assert_allclose(fldj, -ildj, **TOL[dtype], err_msg=name)


def test_log_det_matches_autodiff_jacobian():
  for name, bij, x in _cases("float64"):
    # The Jacobian over the whole batch is block-diagonal: its log-det is the sum of the events'.
    expected = ff.autodiff_log_det(bij.forward, x)
    got = np.sum(bij.forward_log_det_jacobian(ff.fresh(x), event_ndims=3).numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=name)


def test_whole_chain_log_det_from_pixel_space_matches_autodiff():
  flow = ff.make_flow((8, 8, 1), dtype="float64")
  z = ff.latents((1,), "float64")
  x = ff.pixels((1, 8, 8, 1), "float64")
  expected = ff.autodiff_log_det(lambda t: flow.bijector(z).forward(t), x)
  got = flow.bijector(z).forward_log_det_jacobian(x, event_ndims=3).numpy()[0]
  assert abs(got - expected) < 1e-4


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_batch_ranks(batch_shape):
  flow = ff.make_flow((4, 4, 1))
  z = ff.latents(batch_shape) if batch_shape else ff.latents((1,))[0]
  x = ff.pixels(batch_shape + (4, 4, 1))
  bij = flow.bijector(z)
  y = bij.forward(x)
  ldj = bij.forward_log_det_jacobian(x, event_ndims=3)
  assert y.shape == x.shape
  assert ldj.shape == batch_shape
  # Each event's log-det equals the one computed on its own.
  flat_x = tf.reshape(x, (-1, 4, 4, 1))
  flat_z = tf.reshape(z, (-1, ff.LATENT_DIM))
  for i in range(flat_x.shape[0]):
    single = flow.bijector(flat_z[i:i + 1]).forward_log_det_jacobian(flat_x[i:i + 1], 3)
    np.testing.assert_allclose(tf.reshape(ldj, [-1])[i], single[0], rtol=1e-5)


def test_latent_broadcasts_over_sample_dimension():
  flow = ff.make_flow((4, 4, 1))
  z = ff.latents((2,))
  x = ff.pixels((5, 2, 4, 4, 1))
  ldj = flow.bijector(z).forward_log_det_jacobian(x, event_ndims=3)
  assert ldj.shape == (5, 2)
  single = flow.bijector(z[1:2]).forward_log_det_jacobian(x[3, 1:2], 3)
  np.testing.assert_allclose(ldj[3, 1], single[0], rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pixel_domain_edges_are_finite_and_invertible(dtype):
  flow = ff.make_flow((4, 4, 1), dtype=dtype)
  top = 256.0 - (2.0 ** -16 if dtype == "float32" else 1e-9)
  x = tf.constant(np.array([0.0, top] * 8).reshape(1, 4, 4, 1).astype(dtype))
  bij = flow.bijector(ff.latents((1,), dtype))
  y = bij.forward(x)
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(bij.forward_log_det_jacobian(x, 3)))
  np.testing.assert_allclose(bij.inverse(ff.fresh(y)), x, rtol=0,
                             atol=0.05 if dtype == "float32" else 1e-7)


@pytest.mark.parametrize("alpha", [0.05, 1e-3, 1e-6])
def test_preprocessing_log_det_matches_numpy_formula(alpha):
  x = ff.pixels((3, 4, 4, 1), "float64")
  bij = vb.pixels_to_logits(alpha, dtype="float64")
  xp = alpha + (1 - 2 * alpha) * x.numpy() / 256.0
  np.testing.assert_allclose(bij.forward(x), np.log(xp) - np.log1p(-xp), rtol=1e-12)
  expected = np.sum(np.log((1 - 2 * alpha) / (256.0 * xp * (1 - xp))), axis=(1, 2, 3))
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, event_ndims=3), expected, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 1e-6])
def test_preprocessing_in_float32_is_finite_and_exact_at_the_pixel_domain_edges(alpha):
  # The smallest and largest dequantised pixels (0 and the float32 just below 256): with a small
  # alpha (e.g. 1e-6) 1 - x' is ~1e-6, still above float32's resolution near 1 (6e-8), so the
  # logit and its log-det stay finite and agree with float64 within what rounding x' to float32
  # allows: |d logit| = |d x'| / (x' (1 - x')) with |d x'| <= eps.
  edges = np.array([0.0, 2.0 ** -8, 255.5, 256.0 - 2.0 ** -16]).reshape(1, 2, 2, 1)
  out32 = vb.pixels_to_logits(alpha, dtype="float32")
  out64 = vb.pixels_to_logits(alpha, dtype="float64")
  y32 = out32.forward(tf.constant(edges, tf.float32)).numpy()
  y64 = out64.forward(tf.constant(edges, tf.float64)).numpy()
  xp = alpha + (1 - 2 * alpha) * edges / 256.0
  tolerance = np.finfo(np.float32).eps / (xp * (1 - xp))
  assert np.all(np.isfinite(y32))
  assert np.all(np.abs(y32 - y64) <= tolerance), (y32 - y64, tolerance)
  ldj32 = float(out32.forward_log_det_jacobian(tf.constant(edges, tf.float32), 3)[0])
  ldj64 = float(out64.forward_log_det_jacobian(tf.constant(edges, tf.float64), 3)[0])
  assert np.isfinite(ldj32) and abs(ldj32 - ldj64) <= tolerance.sum() + 1e-4 * abs(ldj64)
  np.testing.assert_allclose(out32.inverse(tf.constant(y32)), edges, rtol=0, atol=2e-3)


def test_checkerboard_mask_alternates():
  m0 = vb.checkerboard_mask(4, 4, 0, tf.float32)[..., 0].numpy()
  m1 = vb.checkerboard_mask(4, 4, 1, tf.float32)[..., 0].numpy()
  np.testing.assert_array_equal(m0 + m1, np.ones((4, 4)))
  assert m0[0, 0] == 1 and m0[0, 1] == 0 and m0[1, 0] == 0 and m0.sum() == 8


def test_masked_parts_pass_through_unchanged():
  x = ff.pixels((2, 4, 4, 2), low=-2, high=2)
  cb = _coupling("checkerboard", 0, (4, 4, 2), "float32")
  mask = vb.checkerboard_mask(4, 4, 0, tf.float32)
  y = cb.forward(x)
  np.testing.assert_array_equal((y * mask).numpy(), (x * mask).numpy())
  assert not np.allclose(y * (1 - mask), x * (1 - mask))
  for parity, kept in ((0, slice(0, 1)), (1, slice(1, 2))):
    ch = _coupling("channel", parity, (4, 4, 2), "float32")
    y = ch.forward(x)
    np.testing.assert_array_equal(y[..., kept].numpy(), x[..., kept].numpy())


def test_squeeze_is_space_to_depth_and_checks_sizes():
  x = tf.reshape(tf.range(16.0), (1, 2, 2, 4))
  np.testing.assert_array_equal(vb.Squeeze().forward(x), tf.nn.space_to_depth(x, 2))
  assert vb.Squeeze().forward_event_shape([4, 6, 3]) == [2, 3, 12]
  with pytest.raises(ValueError, match="even height and width"):
    vb.Squeeze().forward(tf.zeros((1, 3, 4, 1)))


def test_bad_arguments_raise_clear_errors():
  net = CouplingNetwork(1, 4, 4, filters=2, num_res_blocks=1)
  with pytest.raises(ValueError, match="mask_type"):
    vb.ConditionalAffineCoupling(net, "stripes", 0)
  with pytest.raises(ValueError, match="parity"):
    vb.ConditionalAffineCoupling(net, "channel", 2)
  with pytest.raises(ValueError, match="even channel count"):
    vb.ConditionalAffineCoupling(net, "channel", 0, ff.latents((1,))).forward(tf.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match="expected events of shape"):
    vb.ConditionalAffineCoupling(net, "checkerboard", 0, ff.latents((1,)),
                                 event_shape=(4, 4, 1)).forward(tf.zeros((1, 4, 4, 2)))
  with pytest.raises(ValueError, match="alpha"):
    vb.pixels_to_logits(0.5)


@pytest.mark.parametrize("mask_type,parity", [("checkerboard", 0), ("checkerboard", 1),
                                              ("channel", 0), ("channel", 1)])
def test_coupling_takes_any_transform_fn(mask_type, parity):
  """The transform is a separable part: a plain callable giving constant (shift, log_scale)."""
  seen = []

  def transform_fn(x_kept, z):
    seen.append((tuple(x_kept.shape), None if z is None else tuple(z.shape)))
    channels = 2 if mask_type == "checkerboard" else 1
    shape = tf.concat([tf.shape(x_kept)[:-1], [channels]], axis=0)
    constant = lambda value: tf.fill(shape, tf.constant(value, x_kept.dtype))
    return constant(0.25), constant(0.5)  # shift, log_scale

  x = ff.pixels((3, 4, 4, 2), "float64", low=-2, high=2)
  bij = vb.ConditionalAffineCoupling(transform_fn, mask_type, parity, ff.latents((3,), "float64"))
  y = bij.forward(x).numpy()
  if mask_type == "checkerboard":
    changed = 1.0 - vb.checkerboard_mask(4, 4, parity, tf.float64).numpy()
    assert seen[0] == ((3, 4, 4, 3), (3, ff.LATENT_DIM))  # masked x + the mask channel
  else:
    changed = np.zeros((1, 1, 2))
    changed[..., 1 - parity] = 1.0
    assert seen[0] == ((3, 4, 4, 1), (3, ff.LATENT_DIM))
  changed = np.broadcast_to(changed, (4, 4, 2))
  expected = np.where(changed > 0, x.numpy() * np.exp(0.5) + 0.25, x.numpy())
  np.testing.assert_allclose(y, expected, rtol=1e-12)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, event_ndims=3),
                             [0.5 * changed.sum()] * 3, rtol=1e-12)
  np.testing.assert_allclose(bij.inverse(ff.fresh(tf.constant(y))), x, rtol=1e-12)
  assert bij.transform_fn is transform_fn
  with pytest.raises(ValueError, match="transform_fn must be callable"):
    vb.ConditionalAffineCoupling("network", mask_type, parity)


# ------------------------------------------- couplings: batch ranks and broadcasting against z


COUPLINGS = [("checkerboard", 0), ("checkerboard", 1), ("channel", 0), ("channel", 1)]


def _couplings(mask_type, parity, dtype):
  """z -> the coupling of one `_coupling` network (the same weights) conditioned on z."""
  network = _coupling(mask_type, parity, (4, 4, 2), dtype).network
  return lambda z: vb.ConditionalAffineCoupling(network, mask_type, parity, z,
                                                event_shape=(4, 4, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_type,parity", COUPLINGS)
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3), (2, 1, 3)])
def test_each_coupling_takes_batch_ranks_0_to_3(mask_type, parity, batch_shape, dtype):
  z = ff.latents(batch_shape, dtype)
  make = _couplings(mask_type, parity, dtype)
  bij = make(z)
  x = ff.pixels(batch_shape + (4, 4, 2), dtype, low=-2, high=2)
  y = bij.forward(x)
  fldj = bij.forward_log_det_jacobian(x, event_ndims=3)
  assert y.shape == x.shape and fldj.shape == batch_shape
  assert bij.experimental_batch_shape(x_event_ndims=3) == batch_shape
  np.testing.assert_allclose(bij.inverse(ff.fresh(y)), x, **TOL[dtype])
  np.testing.assert_allclose(bij.inverse_log_det_jacobian(ff.fresh(y), event_ndims=3), -fldj,
                             **TOL[dtype])
  flat_x, flat_z = tf.reshape(x, (-1, 4, 4, 2)), tf.reshape(z, (-1, ff.LATENT_DIM))
  single = make(flat_z)
  np.testing.assert_allclose(tf.reshape(y, (-1, 4, 4, 2)), single.forward(flat_x), **TOL[dtype])
  np.testing.assert_allclose(tf.reshape(fldj, [-1]), single.forward_log_det_jacobian(flat_x, 3),
                             **TOL[dtype])


@pytest.mark.parametrize("mask_type,parity", COUPLINGS)
def test_each_coupling_broadcasts_x_against_z_both_ways(mask_type, parity):
  """z `(k, B, L)` with x `(B, H, W, C)` gives `(k, B, ...)`, as TFP's batched bijectors do; so
  does z `(B, L)` with x `(k, B, ...)`, and z `(3, L)` with x `(1, ...)` gives `(3, ...)`."""
  z = ff.latents((3, 2), "float64")
  x = ff.pixels((2, 4, 4, 2), "float64", low=-2, high=2)
  make = _couplings(mask_type, parity, "float64")
  bij = make(z)
  y, fldj = bij.forward(x), bij.forward_log_det_jacobian(x, event_ndims=3)
  assert y.shape == (3, 2, 4, 4, 2) and fldj.shape == (3, 2)
  for i in range(3):
    row = make(z[i])
    np.testing.assert_allclose(y[i], row.forward(ff.fresh(x)), rtol=1e-12)
    np.testing.assert_allclose(fldj[i], row.forward_log_det_jacobian(ff.fresh(x), 3), rtol=1e-12)
  np.testing.assert_allclose(bij.inverse(ff.fresh(y)), np.broadcast_to(x, y.shape), rtol=1e-9,
                             atol=1e-12)
  other_way = make(z[0])
  assert other_way.forward(tf.stack([x] * 3)).shape == (3, 2, 4, 4, 2)
  single = make(z[:, 0])
  assert single.forward(x[:1]).shape == (3, 4, 4, 2)
  with pytest.raises(ValueError, match="does not broadcast against"):
    single.forward(x)  # batches (3,) and (2,)


def test_coupling_batch_slicing_slices_its_conditioning():
  z = ff.latents((3, 2), "float64")
  x = ff.pixels((2, 4, 4, 2), "float64", low=-2, high=2)
  bij = _couplings("checkerboard", 0, "float64")(z)
  assert bij[1].experimental_batch_shape(x_event_ndims=3) == (2,)
  np.testing.assert_allclose(bij[1].forward(x), bij.forward(ff.fresh(x))[1], rtol=1e-12)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_coupling_agrees_in_eager_function_and_xla(jit_compile):
  z = ff.latents((3, 2))
  x = ff.pixels((2, 4, 4, 2), low=-2, high=2)
  bij = _couplings("channel", 1, "float32")(z)

  def run(x):
    return bij.forward(x), bij.forward_log_det_jacobian(x, event_ndims=3), bij.inverse(x)

  for got, eager in zip(tf.function(run, jit_compile=jit_compile)(x), run(ff.fresh(x))):
    np.testing.assert_allclose(got, eager, rtol=1e-5, atol=1e-5)
