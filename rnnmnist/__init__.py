"""rnnmnist: train, evaluate and use recurrent networks that read MNIST digits as sequences."""

__version__ = "0.4.0"  # the one version number (pyproject.toml reads it; rnnmnist --version shows it)
