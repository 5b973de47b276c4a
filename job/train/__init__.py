"""A training run: strategy, callbacks, the custom multi-worker loop, finishing a run."""
