"""Feature shards (HDF5), the append-only shard plan, fingerprints, the shard reader and MMT/CE interop."""
