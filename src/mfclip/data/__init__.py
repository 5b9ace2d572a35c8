"""Everything between a dataset on disk and a batch of tensors: manifests, importers, decoding,
transforms, datasets and the synthetic benchmark. Knows nothing of models."""
