"""Default synthesis settings (no torch import, so that listing and argument parsing stay fast)."""

RESIDUAL_CRITERION = 0.005
"""η: eval-mode MSE on [-1, 1] over held-out crops at which a synthetic model stops training."""

DEFAULT_CROP = 32
DEFAULT_STEPS = 200
DEFAULT_BATCH = 8
DEFAULT_LR = 2e-3
DEFAULT_CHECK_EVERY = 25
DEFAULT_GROUP_SIZE = 4
"""Seeds of one architecture trained as one grouped network. On the 2-core dev machine (1 thread, 32² crops, batch 8)
G=4 was 25–30% faster per model than G=1, G=8 and G=20 no better than G=4 (the convolutions are compute-bound);
see ``benchmarks/README.md``."""
