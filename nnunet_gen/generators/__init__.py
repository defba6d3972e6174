"""Training the generative models on a raw dataset (the stage before ``render``): SinGAN on one target slice for GBA,
ARHNet harmonisers on a dataset's lesions. The models themselves live in ``synth`` and work on arrays."""
