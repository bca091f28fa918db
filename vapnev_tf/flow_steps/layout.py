"""The flow's layout as data: per scale, a tuple of `StepSpec`s (Sec. 4.2; docs/design.md §3, §4).

The paper's layout, `default_layout(num_scales, num_checkerboard, num_channelwise)`, is per scale

    checkerboard:0 checkerboard:1 ...   num_checkerboard couplings on (H_s, W_s, C_s)
    squeeze                             -> (H_s/2, W_s/2, 4 C_s)
    channel:0 channel:1 ...             num_channelwise couplings
    factor_out                          [not last scale] channels [2 C_s:] are final coordinates
                                        of y; [:2 C_s] go on to scale s+1
and, implicitly, the inverse of every squeeze of the scale at its end
(`StepKind.undone_at_scale_end`), so y has the image's shape (H, W, C).

String form (a config field can carry it):

    layout := scale ( "|" scale )*
    scale  := step ( sep step )*                  sep: whitespace and/or ","
    step   := kind [ ":" parity ] [ "(" option ( "," option )* ")" ] [ "*" count ]
            | "(" scale ")" [ "*" count ]         a group of steps
    option := name "=" value                      value: int, float, true/false or a word

`kind*n` repeats a step n times; for kinds with a parity it alternates, starting from the given
parity (default 0). `(group)*n` repeats the group's steps n times; in repetition i (from 0) every
step with a parity has it flipped i times, so `(channel)*3` is `channel*3`. The paper's 2-scale
layout is

    "checkerboard*3 squeeze channel*3 factor_out | checkerboard*3 squeeze channel*3"

and Glow's (`vapnev_tf.flow_steps.glow.glow_layout`) e.g.
`"squeeze (actnorm invconv channel)*4 factor_out | squeeze (actnorm invconv channel)*4"`.

Every error is a ValueError naming the scale, the step or token, and the registered kinds.
"""
import dataclasses
import re
from typing import Any

from vapnev_tf.flow_steps import registry

_STEP_RE = re.compile(
    r"^(?P<kind>[a-z][a-z0-9_]*)(?::(?P<parity>\d+))?(?:\((?P<options>[^()]*)\))?"
    r"(?:\*(?P<count>\d+))?$")
_GROUP_RE = re.compile(r"^\((?P<body>.*)\)(?:\*(?P<count>\d+))?$", re.DOTALL)
_OPTION_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)=(?P<value>[^=\s]+)$")
STEP_GRAMMAR = "kind[:parity][(name=value,...)][*count]"


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """One step of the flow: a registered kind, its parity (kinds with masks) and its options.

  Args:
    kind: a name from `registered_kinds()`.
    parity: 0 or 1 for kinds with `uses_parity` (None means 0), None for the others.
    options: `{name: value}` or `((name, value), ...)`; stored sorted by name, so specs are
      hashable and compare by value.
  """
  kind: str
  parity: int | None = None
  options: Any = ()

  def __post_init__(self):
    items = self.options.items() if isinstance(self.options, dict) else self.options
    try:
      options = tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError):
      raise ValueError(f"StepSpec {self.kind!r}: options must be a dict or (name, value) pairs, "
                       f"got {self.options!r}.") from None
    object.__setattr__(self, "options", options)

  def option(self, name: str, default=None):
    return dict(self.options).get(name, default)


@dataclasses.dataclass(frozen=True)
class PlannedStep:
  """A validated step placed in the flow: its kind, the event it acts on and its name.

  `name` is `scale{s}_{kind}{i}`, i counting the steps of that kind in scale s; it names the step's
  layer (the flow's attribute of the same name, when the kind has one) and its bijector.
  """
  spec: StepSpec
  kind: registry.StepKind
  scale: int
  event_shape: tuple
  name: str


def default_layout(num_scales: int = 2, num_checkerboard: int = 3, num_channelwise: int = 3):
  """The paper's layout (Sec. 4.2; docs/design.md §3, §4) as a tuple of scales of `StepSpec`s."""
  if int(num_scales) < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  if num_checkerboard < 0 or num_channelwise < 0 or num_checkerboard + num_channelwise == 0:
    raise ValueError("num_checkerboard and num_channelwise must be >= 0 and not both 0, got "
                     f"{num_checkerboard} and {num_channelwise}.")
  layout = []
  for s in range(num_scales):
    steps = [StepSpec("checkerboard", i % 2) for i in range(num_checkerboard)]
    steps.append(StepSpec("squeeze"))
    steps += [StepSpec("channel", i % 2) for i in range(num_channelwise)]
    if s + 1 < num_scales:
      steps.append(StepSpec("factor_out"))
    layout.append(tuple(steps))
  return tuple(layout)


def _tokens(text: str, scale: int):
  """Splits one scale's text at whitespace and commas outside parentheses."""
  tokens, current, depth = [], "", 0
  for char in text:
    if char == "(":
      depth += 1
    elif char == ")":
      depth -= 1
      if depth < 0:
        raise ValueError(f"flow layout scale {scale}: unbalanced ')' in {text.strip()!r}.")
    if depth == 0 and (char.isspace() or char == ","):
      if current:
        tokens.append(current)
      current = ""
    else:
      current += char
  if depth:
    raise ValueError(f"flow layout scale {scale}: unbalanced '(' in {text.strip()!r}.")
  if current:
    tokens.append(current)
  return tokens


def _coerce(kind: registry.StepKind, token: str, name: str, value: str):
  if name not in kind.options:
    allowed = ", ".join(sorted(kind.options)) or "none"
    raise ValueError(f"flow layout step {token!r}: kind {kind.name!r} has no option {name!r}; "
                     f"its options: {allowed}.")
  option_type = kind.options[name]
  try:
    if option_type is bool:
      if value not in ("true", "false"):
        raise ValueError
      return value == "true"
    return option_type(value)
  except ValueError:
    raise ValueError(f"flow layout step {token!r}: option {name}={value!r} is not a valid "
                     f"{option_type.__name__}.") from None


def _parse_group(token: str, scale: int):
  """`(step ...)*n`: the group's specs n times, parities flipped in odd repetitions."""
  group = _GROUP_RE.match(token)
  tokens = _tokens(group["body"], scale)
  if not tokens:
    raise ValueError(f"flow layout scale {scale}: the group {token!r} has no steps.")
  specs = [spec for inner in tokens for spec in _parse_step(inner, scale)]
  count = int(group["count"]) if group["count"] is not None else 1
  if count < 1:
    raise ValueError(f"flow layout step {token!r}: the repeat count must be >= 1, got {count}.")
  return [StepSpec(spec.kind, None if spec.parity is None else (spec.parity + i) % 2,
                   spec.options) for i in range(count) for spec in specs]


def _parse_step(token: str, scale: int):
  if token.startswith("(") and _GROUP_RE.match(token):
    return _parse_group(token, scale)
  match = _STEP_RE.match(token)
  if match is None:
    raise ValueError(f"flow layout scale {scale}: cannot parse step {token!r}; expected "
                     f"{STEP_GRAMMAR}; registered kinds: {', '.join(registry.registered_kinds())}.")
  try:
    kind = registry.get_step_kind(match["kind"])
  except ValueError as e:
    raise ValueError(f"flow layout scale {scale}, step {token!r}: {e}") from None
  if match["parity"] is not None and not kind.uses_parity:
    raise ValueError(f"flow layout step {token!r}: kind {kind.name!r} takes no parity.")
  parity = int(match["parity"]) if match["parity"] is not None else 0
  if kind.uses_parity and parity not in (0, 1):
    raise ValueError(f"flow layout step {token!r}: parity must be 0 or 1, got {parity}.")
  options = {}
  if match["options"]:
    for item in match["options"].split(","):
      option = _OPTION_RE.match(item.strip())
      if option is None:
        raise ValueError(f"flow layout step {token!r}: cannot parse option {item!r}; expected "
                         "name=value.")
      options[option["name"]] = _coerce(kind, token, option["name"], option["value"])
  count = int(match["count"]) if match["count"] is not None else 1
  if count < 1:
    raise ValueError(f"flow layout step {token!r}: the repeat count must be >= 1, got {count}.")
  return [StepSpec(kind.name, (parity + i) % 2 if kind.uses_parity else None, options)
          for i in range(count)]


def parse_layout(text: str):
  """Parses the string form (module docstring) into a validated tuple of scales of `StepSpec`s."""
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f"flow layout must be a non-empty string, got {text!r}.")
  layout = []
  for s, scale_text in enumerate(text.split("|")):
    tokens = _tokens(scale_text, s)
    if not tokens:
      raise ValueError(f"flow layout {text!r}: scale {s} has no steps.")
    layout.append(tuple(spec for token in tokens for spec in _parse_step(token, s)))
  return validate_layout(layout)


def _format_value(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def _repeats(first: StepSpec, other: StepSpec, n: int) -> bool:
  """Whether `other`, n steps after `first`, continues `first*...` (same kind, options; parity)."""
  return (other.kind == first.kind and other.options == first.options and
          (first.parity is None or other.parity == (first.parity + n) % 2))


def format_layout(layout) -> str:
  """The shortest string form of `layout`: runs of alternating parity become `kind*n`.

  `parse_layout(format_layout(layout)) == validate_layout(layout)`.
  """
  layout = validate_layout(layout)
  scales = []
  for steps in layout:
    words, i = [], 0
    while i < len(steps):
      spec, n = steps[i], 1
      while i + n < len(steps) and _repeats(spec, steps[i + n], n):
        n += 1
      word = spec.kind + (f":{spec.parity}" if spec.parity else "")
      if spec.options:
        word += "(" + ",".join(f"{k}={_format_value(v)}" for k, v in spec.options) + ")"
      words.append(word + (f"*{n}" if n > 1 else ""))
      i += n
    scales.append(" ".join(words))
  return " | ".join(scales)


def validate_layout(layout):
  """Checks a layout's structure and returns it as a tuple of tuples of `StepSpec`s.

  Every kind must be registered; parities only on kinds with `uses_parity` (None becomes 0);
  options must be declared by the kind, with its type; a splitting kind (factor_out) must end every
  scale but the last and must not appear elsewhere. Geometry is checked by `plan_layout`.
  """
  if isinstance(layout, str):
    return parse_layout(layout)
  if isinstance(layout, StepSpec) or not isinstance(layout, (list, tuple)) or not layout:
    raise ValueError("flow layout must be a non-empty sequence of scales, each a sequence of "
                     f"StepSpec, got {layout!r}.")
  result = []
  for s, steps in enumerate(layout):
    if isinstance(steps, StepSpec) or not isinstance(steps, (list, tuple)) or not steps:
      raise ValueError(f"flow layout scale {s} must be a non-empty sequence of StepSpec, got "
                       f"{steps!r}.")
    checked = []
    for i, spec in enumerate(steps):
      if not isinstance(spec, StepSpec):
        raise ValueError(f"flow layout scale {s} step {i} must be a StepSpec, got {spec!r}.")
      where = f"flow layout scale {s} step {i} ({spec.kind!r})"
      try:
        kind = registry.get_step_kind(spec.kind)
      except ValueError as e:
        raise ValueError(f"flow layout scale {s} step {i}: {e}") from None
      parity = spec.parity
      if kind.uses_parity:
        parity = 0 if parity is None else parity
        if parity not in (0, 1):
          raise ValueError(f"{where}: parity must be 0 or 1, got {parity!r}.")
      elif parity is not None:
        raise ValueError(f"{where}: kind {kind.name!r} takes no parity, got {parity!r}.")
      for name, value in spec.options:
        if name not in kind.options:
          allowed = ", ".join(sorted(kind.options)) or "none"
          raise ValueError(f"{where}: unknown option {name!r}; its options: {allowed}.")
        expected = kind.options[name]
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
          raise ValueError(f"{where}: option {name}={value!r} must be a {expected.__name__}.")
      if kind.splits and (s + 1 == len(layout) or i + 1 != len(steps)):
        raise ValueError(f"{where}: a splitting step must be the last step of a scale that is not "
                         f"the last scale (layout has {len(layout)} scales).")
      checked.append(StepSpec(spec.kind, parity, spec.options))
    if s + 1 < len(layout) and not registry.get_step_kind(checked[-1].kind).splits:
      raise ValueError(f"flow layout scale {s}: every scale but the last must end with a "
                       "splitting step (factor_out) that hands channels to the next scale; got "
                       f"{checked[-1].kind!r} last.")
    result.append(tuple(checked))
  return tuple(result)


def resolve_layout(layout=None, num_scales: int = 2, num_checkerboard: int = 3,
                   num_channelwise: int = 3):
  """`layout` (string form or specs) validated, or the default layout from the counts if None."""
  if layout is None:
    return default_layout(num_scales, num_checkerboard, num_channelwise)
  return validate_layout(layout)


def plan_layout(layout, image_shape):
  """Walks the event shapes of a validated layout on `(H, W, C)` images.

  Returns one tuple of `PlannedStep`s per scale. Scale 0 acts on `(H, W, C)`; scale s+1 on the
  shape the splitting step of scale s hands on. Raises ValueError naming the scale, step and shape
  when a kind cannot act on its event, or when a step that is neither undone at the scale's end
  nor splitting changes the event shape (y must keep the image's shape, docs/design.md §3).
  """
  layout = validate_layout(layout)
  shape = tuple(int(d) for d in image_shape)
  plan = []
  for s, steps in enumerate(layout):
    counts, planned = {}, []
    for i, spec in enumerate(steps):
      kind = registry.get_step_kind(spec.kind)
      index = counts.get(kind.name, 0)
      counts[kind.name] = index + 1
      try:
        out = tuple(int(d) for d in kind.output_shape(spec, shape))
      except ValueError as e:
        raise ValueError(f"flow layout scale {s} step {i} ({kind.name!r}) on events of shape "
                         f"{shape}: {e}") from None
      planned.append(PlannedStep(spec, kind, s, shape, f"scale{s}_{kind.name}{index}"))
      if kind.splits:
        next_shape = out
      elif kind.undone_at_scale_end:
        shape = out
      elif out != shape:
        raise ValueError(f"flow layout scale {s} step {i} ({kind.name!r}) maps events of shape "
                         f"{shape} to {out}; only steps undone at the scale's end may change it.")
    plan.append(tuple(planned))
    if s + 1 < len(layout):
      shape = next_shape  # pylint: disable=undefined-loop-variable
  return tuple(plan)
