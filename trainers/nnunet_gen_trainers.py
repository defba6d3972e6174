"""Re-exports of nnunet_gen's trainers for ``nnUNet_extTrainer`` (point it at this folder).

nnU-Net imports every module here and removes them from sys.modules afterwards, so nothing may be defined here:
the classes live in the installed ``nnunet_gen`` package, where pickling and prediction can find them again.
"""
from nnunet_gen.training.adv_norm import *  # noqa: F401,F403
from nnunet_gen.training.arh import *  # noqa: F401,F403
from nnunet_gen.training.gba import *  # noqa: F401,F403
from nnunet_gen.training.gin import *  # noqa: F401,F403
from nnunet_gen.training.naive_rescale import *  # noqa: F401,F403
from nnunet_gen.training.schedules import *  # noqa: F401,F403
from nnunet_gen.training.selftrain import *  # noqa: F401,F403
