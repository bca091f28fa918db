"""ELBO (bits/dim) of one trained run's weights under float32 and bfloat16 networks.

Usage: PYTHONPATH=CHECKOUT python precision_eval.py WORKDIR LABEL [N] (LABEL f32, bf16_new or
bf16_old; N test images, default 2000); prints LABEL, step, two output-layer dtypes and the ELBO in
bits/dim. CHECKOUT is the code to measure. WORKDIR is copied to /tmp/perf/eval_copy_LABEL with
its config.json's compute_dtype changed.
"""
import gzip
import json
import math
import shutil
import sys

import numpy as np
import tensorflow as tf
import vapnev_tf

src, label = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
dtype = "bfloat16" if "bf16" in label else "float32"
dst = f"/tmp/perf/eval_copy_{label}"
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
cfg = json.load(open(f"{dst}/config.json"))
cfg["model"]["compute_dtype"] = dtype
json.dump(cfg, open(f"{dst}/config.json", "w"))
model, info = vapnev_tf.load_run(dst)
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
  raw = np.frombuffer(f.read(16 + n * 784), np.uint8, offset=16).reshape(n, 28, 28, 1)
rng = np.random.default_rng(0)
x = raw.astype(np.float32) + rng.uniform(size=raw.shape).astype(np.float32)
x = np.minimum(x, np.nextafter(np.float32(256), np.float32(0)))
elbo = tf.function(lambda xb, s: model.elbo(xb, seed=s))
vals = []
for i in range(0, n, 250):
  vals.append(elbo(tf.constant(x[i:i + 250]), tf.constant([7, i])).numpy())
vals = np.concatenate(vals)
bpd = -vals.mean() / (784 * math.log(2))
print(label, info["step"], model.decoder.head0.compute_dtype,
      model.flow.coupling_networks()[0].lm1.conv_out.compute_dtype, f"{bpd:.5f}")
