"""rnnmnist: train, evaluate and use recurrent networks that read MNIST digits as sequences."""

__version__ = "0.1.0"
