"""Array-level augmentations shared by rendering and training: naive tumour rescaling, Generative Blending, the
intensity statistics that make them exact on normalised patches, and the batchgeneratorsv2 transforms nnU-Net runs."""
