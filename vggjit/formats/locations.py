"""Where other tools keep the VGG weights they downloaded, so vggjit can use them as they are.

* torch hub: ``$TORCH_HOME/hub/checkpoints/`` (``$TORCH_HOME`` defaults to
  ``$XDG_CACHE_HOME/torch``, i.e. ``~/.cache/torch``): torchvision's ``vgg19-dcbb9e9d.pth``,
  ``vgg16-397923af.pth``;
* the Hugging Face hub: ``$HF_HUB_CACHE`` (default ``$HF_HOME/hub``, ``$HF_HOME`` defaulting to
  ``~/.cache/huggingface``): ``models--timm--vgg19.tv_in1k/snapshots/<revision>/model.safetensors``
  (or ``pytorch_model.bin``) and the same for ``vgg16.tv_in1k``;
* Keras: ``$KERAS_HOME/models/`` (default ``~/.keras/models/``):
  ``vgg19_weights_tf_dim_ordering_tf_kernels.h5`` and ``vgg16_...``, then the ``_notop`` files
  (convolution stack only).
"""
from __future__ import annotations

import os
from pathlib import Path

#: torchvision's published file names (the hash prefix is part of the name).
TORCHVISION_FILES = {"vgg19": "vgg19-dcbb9e9d.pth", "vgg16": "vgg16-397923af.pth"}
#: timm's model names on the Hugging Face hub.
TIMM_MODELS = {"vgg19": "timm/vgg19.tv_in1k", "vgg16": "timm/vgg16.tv_in1k"}
KERAS_FILES = {"vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
               "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels.h5"}
NOTOP = "_notop"


def torch_hub_dir(environ=os.environ) -> Path:
    home = environ.get("TORCH_HOME")
    if not home:
        home = Path(environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "torch"
    return Path(home).expanduser() / "hub" / "checkpoints"


def hf_hub_dir(environ=os.environ) -> Path:
    if environ.get("HF_HUB_CACHE"):
        return Path(environ["HF_HUB_CACHE"]).expanduser()
    return Path(environ.get("HF_HOME") or "~/.cache/huggingface").expanduser() / "hub"


def keras_dir(environ=os.environ) -> Path:
    return Path(environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models"


def hf_snapshot_file(repo: str, filename: str = "model.safetensors", environ=os.environ
                     ) -> Path | None:
    """The newest snapshot of ``repo`` ("timm/vgg19.tv_in1k") holding ``filename``, if any."""
    snapshots = hf_hub_dir(environ) / f"models--{repo.replace('/', '--')}" / "snapshots"
    try:
        found = [p for p in snapshots.glob(f"*/{filename}") if p.is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def candidates(environ=os.environ) -> list[Path]:
    """Every place a known VGG file may be, in order of preference: VGG19 before VGG16, files
    with a classifier before convolution stacks."""
    places = []
    for net in ("vgg19", "vgg16"):
        places.append(torch_hub_dir(environ) / TORCHVISION_FILES[net])
        places.append(hf_snapshot_file(TIMM_MODELS[net], environ=environ)
                      or hf_snapshot_file(TIMM_MODELS[net], "pytorch_model.bin", environ)
                      or hf_hub_dir(environ) / f"models--{TIMM_MODELS[net].replace('/', '--')}")
        places.append(keras_dir(environ) / KERAS_FILES[net])
    for net in ("vgg19", "vgg16"):
        places.append(keras_dir(environ) / KERAS_FILES[net].replace(".h5", f"{NOTOP}.h5"))
    return places
