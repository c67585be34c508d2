"""Kept for the tests' imports: the generator lives in rnnmnist.synthetic."""

from rnnmnist.synthetic import *  # noqa: F403
