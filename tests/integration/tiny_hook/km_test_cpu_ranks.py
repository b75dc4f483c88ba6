"""Test-only: several ranks on CPU for a LoRA, as on several GPUs.

Active when KOHYA_MULTIPLIER_TEST_CPU_RANKS=1 (sitecustomize.py merges :func:`shrinks`). On GPUs,
accelerate's ``prepare_model`` wraps a model in DistributedDataParallel only when it has a
parameter that requires a gradient; on CPU (``MULTI_CPU``) it wraps every model, and torch refuses
DDP for the frozen DiT a LoRA run prepares ("DistributedDataParallel is not needed when a module
doesn't have any parameter that requires a gradient"). The hook gives ``MULTI_CPU`` the GPU rule,
so two CPU ranks run the trainer's own distributed path (its DataLoader sharding, its LoRA in DDP).
"""

import functools
import os

CPU_RANKS_ENV = "KOHYA_MULTIPLIER_TEST_CPU_RANKS"


def _gpu_rule_on_cpu(module):
    accelerator_class = module.Accelerator
    real = accelerator_class.prepare_model

    @functools.wraps(real)
    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        frozen = not any(p.requires_grad for p in model.parameters())
        if self.distributed_type == module.DistributedType.MULTI_CPU and frozen:
            evaluation_mode = True  # placed on the device, not wrapped: what every GPU type gets
        return real(self, model, device_placement=device_placement, evaluation_mode=evaluation_mode)

    accelerator_class.prepare_model = prepare_model


def shrinks() -> dict:
    if os.environ.get(CPU_RANKS_ENV) != "1":
        return {}
    return {"accelerate.accelerator": _gpu_rule_on_cpu}
