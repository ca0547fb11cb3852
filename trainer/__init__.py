"""chimera-train: zero-shot training, evaluation and the shapes world (depends on engine, never on Qt)."""

import os

# Training owns the cores, so its OpenMP threads spin at barriers instead of sleeping. Set here, before
# any trainer module imports chimera_engine, whose import asks for PASSIVE (inference beside busy
# processes); a value already set wins: the user's, or the app's PASSIVE, which the fine-tune it runs
# beside its window inherits. benchmarks/wait_policy.py --stage clip (2-core VM, the real CLIP
# pre-training loop, two alternated rounds, results/wait_policy_clip.json): median seconds per step at
# 40 px PASSIVE 0.479, ACTIVE 0.273, libgomp's default 0.281; at 64 px 0.700 / 0.561 / 0.588. Sleeping
# threads left 13-34 % of the CPU idle and every PASSIVE run lost 2-25 % to the hypervisor (steal), the
# others under 3 %.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
