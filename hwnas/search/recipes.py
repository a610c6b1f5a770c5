"""Named hyperparameter presets for real searches (``hwnas search --recipe NAME``).

A recipe fills :class:`hwnas.search.pipeline.SearchConfig` fields the user did not give on the
command line (explicit options win). Batch sizes and learning rates are the papers' *global*
figures: under ``torchrun`` with ``W`` processes the per-process ``--batch-size`` becomes
``global / W`` (so the step, and the learning rate that goes with it, are the paper's on 1 or 8
GPUs). docs/search-at-scale.md gives the sources, the costs and where hwnas deviates.

Sources, checked for this table:

* ``proxyless-*``: the ProxylessNAS reference search script (mit-han-lab/proxylessnas,
  ``search/imagenet_arch_search.py`` defaults): 40 weight-only warm-up epochs, then 120 epochs of
  joint training; SGD Nesterov 0.9, lr 0.025 cosine, weight decay 4e-5, batch 256; architecture
  Adam lr 1e-3, betas (0, 0.999), one architecture step every 5 weight steps; RandomResizedCrop
  scale 0.08–1. The found net is trained from scratch (``imagenet_run_exp.py``: 150 epochs, lr 0.05,
  batch 256 — ``ImagenetRunConfig`` defaults).
* ``fbnet-*``: hwnas's FBNet defaults, which follow Wu et al. 2019 §4.1 as documented in
  :mod:`hwnas.search.differentiable` (weights lr 0.1; θ Adam lr 0.01; Gumbel temperature 5.0 decayed
  by ``e^-0.045`` per epoch); the epoch count (90), warm-up (10) and batch (192) are the paper's
  ImageNet-100 figures as we read them (not re-checked against the PDF in this session).
"""

from __future__ import annotations

from typing import Any

from hwnas.errors import ConfigError, UnknownNameError

_PROXYLESS = dict(method="proxyless", space="mobilenetv2", resolution=224, width=1.0, augment="imagenet",
                  lr=0.025, arch_lr=1e-3, final="scratch", final_lr=0.05, final_epochs=150,
                  options={"arch_every": 5, "arch_betas": [0.0, 0.999], "weight_decay": 4e-5})
_FBNET = dict(method="fbnet", space="fbnet", resolution=224, width=1.0, augment="imagenet", lr=0.1, arch_lr=0.01,
              final="scratch", final_lr=0.05, final_epochs=150,
              options={"temperature": 5.0, "temperature_decay": 0.045, "arch_every": 1})

#: name -> (SearchConfig fields, global batch size, one-line description)
RECIPES: dict[str, tuple[dict[str, Any], int, str]] = {
    "proxyless-imagenet": ({**_PROXYLESS, "epochs": 160, "warmup_epochs": 40}, 256,
                           "ProxylessNAS on ImageNet-1k (reference script): 40 warm-up + 120 search epochs"),
    "proxyless-imagenet100": ({**_PROXYLESS, "epochs": 80, "warmup_epochs": 20}, 256,
                              "ProxylessNAS settings on ImageNet-100 / a mid-size ImageFolder, half the epochs"),
    "fbnet-imagenet100": ({**_FBNET, "epochs": 90, "warmup_epochs": 10}, 192,
                          "FBNet on ImageNet-100 (Wu et al. 2019 §4.1)"),
}


def recipe_config(name: str, world_size: int = 1) -> dict[str, Any]:
    """The :class:`SearchConfig` fields of recipe ``name`` for ``world_size`` processes.

    Raises:
        UnknownNameError: no such recipe (lists them).
        ConfigError: the recipe's global batch is not divisible by ``world_size``.
    """
    if name not in RECIPES:
        raise UnknownNameError("recipe", name, list(RECIPES))
    fields, global_batch, _ = RECIPES[name]
    if global_batch % world_size:
        raise ConfigError(f"recipe '{name}': its global batch {global_batch} is not divisible by "
                          f"{world_size} processes; give --batch-size (per process) yourself")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in fields.items()}
    out["batch_size"] = global_batch // world_size
    out["recipe"] = name
    return out


__all__ = ["RECIPES", "recipe_config"]
