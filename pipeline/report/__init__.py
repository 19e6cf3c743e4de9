"""Static HTML reports of a trained run: metrics, curves, searches as thumbnail strips, center assignments."""
