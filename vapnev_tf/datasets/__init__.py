"""The file readers of the dataset sources `vapnev_tf.data` reads: CelebA's and CIFAR-10's
official files, prepared TFDS directories (`locate`: the detection order), Fashion-MNIST's IDX
files (`fashion_mnist`), user images in an .npz archive (`npz`) or a folder (`folder`), and the
decode check of image files (`images`). The pipeline itself is `vapnev_tf.data`."""
