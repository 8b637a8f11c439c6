"""The preprocess job: OASIS layouts to verified HDF5 shards, and the reader training uses."""
