"""The one resolution rule shared by every upsampling path (docs/design.md §5).

Paths that grow a small spatial map by repeated 2x upsampling (the decoder, Sec. 4.2, and the
l2(z)/m2(z) deconvolution nets of the conditional coupling, Sec. 3.2) must land on sizes that are
not powers of two, e.g. 28 or 7. The rule: walk down from the target by ceil-halving,
`H, ceil(H/2), ceil(H/4), ...`; upsampling retraces that walk upwards, doubling and then
centre-cropping by at most one pixel whenever the walk had rounded up (7 -> 8 -> crop 7).
The encoder's stride-2 'same' convolutions produce exactly the same walk downwards, so the
decoder mirrors the encoder's shapes and 28 -> 14 -> 7 -> 4 -> 2 -> 4 -> 7 -> 14 -> 28.
"""
import math


def halving_walk(size: int, num_halvings: int) -> list[int]:
  """Returns `[size, ceil(size/2), ..., ceil(size/2**num_halvings)]`."""
  walk = [int(size)]
  for _ in range(num_halvings):
    walk.append(-(-walk[-1] // 2))
  return walk


def halvings_to_reach(size: int, smallest: int = 2) -> int:
  """Number of ceil-halvings that bring `size` down to at most `smallest` (0 if already there)."""
  if size <= smallest:
    return 0
  return int(math.ceil(math.log2(size / smallest)))


def upsampling_plan(height: int, width: int, num_halvings: int):
  """Start size and the per-layer target sizes of a 2x upsampling path ending at (height, width).

  Returns:
    `(start, targets)`: `start` is `(h0, w0)`; `targets` lists `num_halvings` pairs, the size after
    each upsampling layer (the last one is `(height, width)`).
  """
  heights = halving_walk(height, num_halvings)[::-1]
  widths = halving_walk(width, num_halvings)[::-1]
  pairs = list(zip(heights, widths))
  return pairs[0], pairs[1:]
