"""The one home of the stream tags that key every random draw, and of the IW chunk size.

A stateless seed is built as `[seed, TAG]` and then folded with counters (step, replica, batch,
example...), so two streams with the same user seed never share noise. The values are part of the
reproducibility contract: changing one changes every number a run produces, so they are fixed
here and imported by the modules that draw (docs/design.md §2 for the IW bound).

Tags are unique within each key construction; the two constructions below are distinct, so the
input pipeline and the model's z draws may reuse a value without sharing noise.

Input pipeline (`vapnev_tf.data._element_key(seed, TAG, *counters)`):
  DATA_TRAIN  training images: flips and dequantisation noise, keyed by (epoch, example index).
  DATA_TEST   test images: dequantisation noise, keyed by example index.

Model draws (`stateless_fold_in([seed, TAG], counter)`):
  TRAIN_Z     z ~ q(z|x) of the training step, folded with (step, replica).
  EVAL_Z      z of the evaluation (ELBO and IW bound), folded with (batch index, replica).
  IMAGES      TensorBoard sample / reconstruction grids, folded with the step.
  LATENT      the latent figures (`vapnev_tf.latent_metrics`): z, u and reconstruction draws,
              folded with (pass, batch index).
  AGGRESSIVE_Z  z of the encoder-only updates of aggressive training, folded with (step, replica,
              update).
"""

DATA_TRAIN = 1
DATA_TEST = 2

TRAIN_Z = 1
EVAL_Z = 3
IMAGES = 4
LATENT = 5
AGGRESSIVE_Z = 6

# Importance samples of the IW bound drawn at once. Chunk j draws its z with the j-th split of the
# seed (`VAPNEV.log_likelihood_bound`), so the chunking is part of the seeding: the model, the
# evaluation, the export and `TrainConfig.eval_chunk_size` all default to this value.
IW_CHUNK_SIZE = 16
