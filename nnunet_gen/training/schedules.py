"""Short training schedules as trainer class variants, nnU-Net's convention (``nnUNetTrainer_5epochs``).

nnU-Net's default 1000 x 250 iterations cannot run on a 2-core CPU (README: seconds per iteration), so ``smoke``
(tests) and ``demo`` exist for CPU; the epoch variants keep nnU-Net's 250 iterations per epoch.
Every variant is a real module-level class (picklable, found by ``nnUNet_extTrainer``).
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

#: suffix -> (epochs, training iterations per epoch, validation iterations per epoch)
SCHEDULES: dict[str, tuple[int, int, int]] = {
    "smoke": (1, 2, 1),
    "demo": (8, 50, 2),
    "1epoch": (1, 250, 50),
    "5epochs": (5, 250, 50),
    "20epochs": (20, 250, 50),
    "100epochs": (100, 250, 50),
}


def with_schedule(base: type, suffix: str, module: str) -> type:
    """Subclass of ``base`` named ``{base}_{suffix}`` with the schedule ``SCHEDULES[suffix]``.

    ``module`` must be the module that binds the returned class under that name (so pickle finds it).
    """
    epochs, iterations, val_iterations = SCHEDULES[suffix]

    # nnU-Net records its constructor arguments by inspecting this signature: keep nnUNetTrainer's names.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = val_iterations

    name = f"{base.__name__}_{suffix}"
    return type(name, (base,), {"__init__": __init__, "__module__": module, "__qualname__": name,
                                "__doc__": f"{base.__name__} for {epochs} epochs x {iterations} iterations."})


def add_schedule_variants(namespace: dict, *bases: type, suffixes: tuple[str, ...] = tuple(SCHEDULES)) -> list[str]:
    """Bind ``{base}_{suffix}`` of every base and schedule in ``namespace`` (a trainer module's ``globals()``, so
    pickle and nnU-Net's lookup find them) and return the names of the bases and their variants (for ``__all__``)."""
    names = []
    for base in bases:
        names.append(base.__name__)
        for suffix in suffixes:
            variant = with_schedule(base, suffix, namespace["__name__"])
            namespace[variant.__name__] = variant
            names.append(variant.__name__)
    return names


#: Stock nnU-Net trainers on our schedules, the arms a user tries first. nnU-Net ships ``nnUNetTrainer_1epoch``,
#: ``_5epochs``, ``_20epochs`` and ``_100epochs`` itself (its own folder is searched first), so only ``_smoke`` and
#: ``_demo`` are added for the plain trainer; its heavier-augmentation variant ``nnUNetTrainerDA5`` gets every schedule.
__all__ = (add_schedule_variants(globals(), nnUNetTrainer, suffixes=("smoke", "demo"))[1:]
           + add_schedule_variants(globals(), nnUNetTrainerDA5)[1:])
