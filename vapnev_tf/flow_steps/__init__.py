"""Flow steps as parts: the layout of f_z is data, each step kind a registered part.

- `layout`: `StepSpec`, the paper's `default_layout`, the string form (`parse_layout`,
  `format_layout`), validation and the shape walk (`plan_layout`).
- `registry`: `StepKind`, `register_step`; its docstring explains how to add a kind.
- `builtin`: the paper's kinds (checkerboard, channel, squeeze, factor_out), registered here.
- `glow`: Glow's kinds (actnorm, invconv), registered here; the Glow recipe (`glow_layout`,
  `glow_layout_string`) and ActNorm's `data_dependent_init`, which the training loop calls once on
  the first batch of a new run.
"""
from vapnev_tf.flow_steps import builtin  # Registers the built-in kinds.
from vapnev_tf.flow_steps import glow  # Registers Glow's kinds.
from vapnev_tf.flow_steps.glow import data_dependent_init
from vapnev_tf.flow_steps.glow import glow_layout
from vapnev_tf.flow_steps.glow import glow_layout_string
from vapnev_tf.flow_steps.layout import PlannedStep
from vapnev_tf.flow_steps.layout import STEP_GRAMMAR
from vapnev_tf.flow_steps.layout import StepSpec
from vapnev_tf.flow_steps.layout import default_layout
from vapnev_tf.flow_steps.layout import format_layout
from vapnev_tf.flow_steps.layout import parse_layout
from vapnev_tf.flow_steps.layout import plan_layout
from vapnev_tf.flow_steps.layout import resolve_layout
from vapnev_tf.flow_steps.layout import validate_layout
from vapnev_tf.flow_steps.registry import LayerContext
from vapnev_tf.flow_steps.registry import StepCall
from vapnev_tf.flow_steps.registry import StepKind
from vapnev_tf.flow_steps.registry import get_step_kind
from vapnev_tf.flow_steps.registry import register_step
from vapnev_tf.flow_steps.registry import registered_kinds

__all__ = ["LayerContext", "PlannedStep", "STEP_GRAMMAR", "StepCall", "StepKind", "StepSpec",
           "builtin", "data_dependent_init", "default_layout", "format_layout", "get_step_kind",
           "glow", "glow_layout", "glow_layout_string", "parse_layout", "plan_layout",
           "register_step", "registered_kinds", "resolve_layout", "validate_layout"]
