"""Running the stock nnU-Net commands (``nnUNetv2_train``, ``nnUNetv2_predict``) as subprocesses, with our trainers
on ``nnUNet_extTrainer``, and the executors that run several trainings (in turn, in parallel, on SLURM)."""
