"""Training a model: the configuration's data and model, the loop, a run's lifecycle, checkpoints."""
