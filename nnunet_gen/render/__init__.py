"""Pre-rendering synthetic cases into new nnU-Net raw datasets: :mod:`~nnunet_gen.render.dataset` writes them with
provenance, one module per generator (naive rescaling, GBA, ARH composites) makes them."""
