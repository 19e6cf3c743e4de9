"""Training heads on cached features: datasets, the text side, the training config, the loop and curves."""
