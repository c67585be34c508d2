"""Kept for the tests' imports: the generator lives in rnnmnist.redraw."""

from rnnmnist.redraw import *  # noqa: F403
