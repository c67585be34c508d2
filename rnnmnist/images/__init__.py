"""Images in, digits out: decoding files, preprocessing to MNIST's form, inference and its trace."""
