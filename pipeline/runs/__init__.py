"""The run folder (config, checkpoints, metrics), a trained run rebuilt from it, evaluation and ablations."""
