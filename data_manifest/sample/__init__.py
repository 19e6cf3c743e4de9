"""The embedded sample dataset: vocabulary, clip plan, rendering, real media fetched from packages."""
