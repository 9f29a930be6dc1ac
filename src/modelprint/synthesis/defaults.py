"""Default synthesis settings (no torch import, so that listing and argument parsing stay fast)."""

RESIDUAL_CRITERION = 0.005
"""η: eval-mode MSE on [-1, 1] over held-out crops at which a synthetic model stops training."""

DEFAULT_CROP = 32
DEFAULT_STEPS = 200
DEFAULT_BATCH = 8
DEFAULT_LR = 2e-3
DEFAULT_CHECK_EVERY = 25
DEFAULT_GROUP_SIZE = 20
