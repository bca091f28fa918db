"""Dataset sources that `vapnev_tf.data` reads: CelebA's and CIFAR-10's official files, prepared
TFDS directories, and the decode check of image files. See `locate` for the detection order."""
