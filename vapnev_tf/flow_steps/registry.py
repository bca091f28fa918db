"""The registry of flow step kinds: a kind name -> how to own its weights and build its bijector.

A step of the flow f_z (Sec. 3.1, 4.2) has two parts, kept apart as the project's standard asks:
- a Keras 3 layer that owns the step's weights, created once in `ConditionalRealNVP.__init__` and
  stored as the flow's attribute `scale{s}_{kind}{i}` (i counts the steps of that kind in scale s);
- a function that builds the step's TFP bijector per call from that layer, the event shape and z.

How to add a kind (e.g. Glow's invertible 1x1 convolution or ActNorm):
1. Write one module with the layer (owning every weight, identity start where possible) and the
   bijector builder (a TFP bijector; derive from `vapnev_tf.bijectors._greedy.GreedyLogDetBijector`
   when the layer is expensive, so it runs once per `log_prob`/`sample`).
2. Register it once, at the bottom of that module:

       register_step(StepKind(
           name="z_affine",
           make_bijector=lambda call: MyBijector(call.layer, call.z, name=call.name),
           make_layer=lambda ctx: MyLayer(ctx.event_shape[-1], conditional=ctx.conditional,
                                          dtype=ctx.dtype, name=ctx.name)))

   and import that module before parsing a layout that names the kind.
3. Use it in a layout, e.g. `"checkerboard*2 z_affine squeeze channel*2"`
   (grammar in `vapnev_tf.flow_steps.layout`), and test it like `tests/test_flow_steps.py`.
The flow itself needs no edit. Built-in kinds live in `vapnev_tf.flow_steps.builtin`.
"""
import dataclasses
from typing import Any, Callable, Mapping

import keras


@dataclasses.dataclass(frozen=True)
class LayerContext:
  """What a kind's `make_layer` gets when `ConditionalRealNVP.__init__` creates the step's layer.

  Attributes:
    spec: the `StepSpec` of this step.
    event_shape: `(H_s, W_s, C_s)` of the events the step acts on.
    scale: index s of the scale.
    filters: residual-block filters of this scale (`filters * 2**s`, Sec. 4.2).
    num_res_blocks, conditional, latent_dim, log_scale_bound: the flow's arguments.
    dtype: the flow's Keras dtype policy; pass it on to the layer.
    name: the layer's name, also the flow's attribute name (`scale{s}_{kind}{i}`).
    conditioning, fused_networks, compute_dtype, receptive_field: the flow's network options
      (see `vapnev_tf.layers.CouplingNetwork`); kinds without networks may ignore them.
  """
  spec: Any
  event_shape: tuple
  scale: int
  filters: int
  num_res_blocks: int
  conditional: bool
  latent_dim: int
  log_scale_bound: float
  dtype: Any
  name: str
  conditioning: str = "per_coupling"
  fused_networks: bool = False
  compute_dtype: str = "float32"
  receptive_field: str = "full"


@dataclasses.dataclass(frozen=True)
class StepCall:
  """What a kind's `make_bijector` gets each time `ConditionalRealNVP.bijector(z)` is called.

  Attributes:
    spec: the `StepSpec` of this step.
    layer: the step's Keras layer (None for kinds without weights).
    event_shape: `(H_s, W_s, C_s)` of the events the step acts on.
    z: `(*batch, latent_dim)`, or None when the flow is unconditional.
    name: a name for the bijector (`scale{s}_{kind}{i}`).
    inner: for splitting kinds only (`StepKind.splits`), the bijector of the following scales,
      acting on the events `StepKind.output_shape` leaves for them; None otherwise.
    z_features: with `conditioning="shared"`, the shared z-trunk's output, computed once per
      `bijector(z)`: `{vapnev_tf.layers.resolution_key(h, w): (*batch, h, w, F)}`; else None.
  """
  spec: Any
  layer: Any
  event_shape: tuple
  z: Any
  name: str
  inner: Any = None
  z_features: Any = None


def _same_shape(spec, event_shape):
  del spec
  return tuple(event_shape)


@dataclasses.dataclass(frozen=True)
class StepKind:
  """A registered step kind.

  Attributes:
    name: the kind's name in layouts and in attribute names (`[a-z][a-z0-9_]*`).
    make_bijector: `StepCall -> tfb.Bijector` mapping `(*batch, *event_shape)` to
      `(*batch, *output_shape(spec, event_shape))`, forward = data -> latent (Eq. 12-13).
    make_layer: `LayerContext -> keras.layers.Layer`, or None for a kind without weights.
    output_shape: `(spec, event_shape) -> event shape after the step`; raises ValueError (naming
      the shape and what was expected) when the kind cannot act on `event_shape`. For a splitting
      kind it is the event shape handed to the following scales. Default: the same shape.
    uses_parity: whether the step takes a parity (0 or 1); `kind*n` then alternates it.
    options: allowed option names -> their type (int, float, bool or str); `StepSpec.options`
      may only use these names.
    undone_at_scale_end: the flow applies the inverse of this step at the end of its scale, in
      reverse order (the squeeze, so y keeps the image's shape, docs/design.md §3).
    splits: the step hands part of the event to the following scales (the factor-out, Sec. 4.2);
      it must be the last step of every scale but the last, and absent from the last.
  """
  name: str
  make_bijector: Callable[[StepCall], Any]
  make_layer: Callable[[LayerContext], keras.layers.Layer] | None = None
  output_shape: Callable[[Any, tuple], tuple] = _same_shape
  uses_parity: bool = False
  options: Mapping[str, type] = dataclasses.field(default_factory=dict)
  undone_at_scale_end: bool = False
  splits: bool = False

  def __post_init__(self):
    if not isinstance(self.name, str) or not _is_identifier(self.name):
      raise ValueError(f"StepKind name must match [a-z][a-z0-9_]*, got {self.name!r}.")
    if not callable(self.make_bijector):
      raise ValueError(f"StepKind {self.name!r}: make_bijector must be callable, got "
                       f"{self.make_bijector!r}.")
    if self.make_layer is not None and not callable(self.make_layer):
      raise ValueError(f"StepKind {self.name!r}: make_layer must be callable or None, got "
                       f"{self.make_layer!r}.")
    for option, option_type in self.options.items():
      if option_type not in (int, float, bool, str):
        raise ValueError(f"StepKind {self.name!r}: option {option!r} has type {option_type!r}; "
                         "expected int, float, bool or str.")
    if self.splits and self.undone_at_scale_end:
      raise ValueError(f"StepKind {self.name!r}: a kind cannot both split and be undone at the "
                       "scale's end.")


def _is_identifier(name: str) -> bool:
  return bool(name) and name[0].isalpha() and name.islower() and \
      all(c.isalnum() or c == "_" for c in name)


_REGISTRY: dict[str, StepKind] = {}


def register_step(kind: StepKind) -> StepKind:
  """Adds `kind` to the registry and returns it.

  Registering the same object twice is a no-op (so a module may be re-imported); another kind
  under a registered name raises ValueError.
  """
  if not isinstance(kind, StepKind):
    raise ValueError(f"register_step expects a StepKind, got {type(kind).__name__}.")
  existing = _REGISTRY.get(kind.name)
  if existing is not None and existing is not kind:
    raise ValueError(f"step kind {kind.name!r} is already registered (as {existing!r}); pick "
                     "another name.")
  _REGISTRY[kind.name] = kind
  return kind


def get_step_kind(name: str) -> StepKind:
  """The registered kind called `name`; ValueError naming the registered kinds otherwise."""
  try:
    return _REGISTRY[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown flow step kind {name!r}; registered kinds: "
                     f"{', '.join(registered_kinds())}.") from None


def registered_kinds() -> tuple[str, ...]:
  """Names of every registered kind, sorted."""
  return tuple(sorted(_REGISTRY))
