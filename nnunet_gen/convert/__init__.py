"""Getting data in: converting image/label folders (generic, CrossMoDA layout) into nnU-Net raw datasets, and the
seeded phantom datasets used by tests and the demo."""
