"""The official weight downloads (docs/formats.md); kept import-free so the CLI parser stays fast.

MatConvNet's VGG19 files (by variant), and per source and network the files torchvision and timm
publish. torchvision's file names carry the first 8 hex digits of the file's SHA-256, which is
what torch hub checks and what vggjit checks too.
"""

#: The lab's file is the older-format ("beta16") one.
DEFAULT_VARIANT = "beta16"

URLS = {
    "beta16": "http://www.vlfeat.org/matconvnet/models/beta16/imagenet-vgg-verydeep-19.mat",
    "new": "http://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat",
}
MD5S = {
    "beta16": "8ee3263992981a1d26e73b3ca028a123",
    "new": "106118b7cf60435e6d8e04f6a6dc3657",
}
DESCRIPTIONS = {
    "beta16": "older MatConvNet format (layers, classes, normalization), the lab's file",
    "new": "newer MatConvNet format (layers, meta)",
}

#: `vggjit weights fetch --source`: where each source's files come from.
SOURCES = ("matconvnet", "torchvision", "timm")
DEFAULT_SOURCE = "matconvnet"
NETWORKS = ("vgg19", "vgg16")

#: (source, network) -> (URL, file name, SHA-256 prefix or None). MatConvNet's is by variant
#: above (MD5); it publishes VGG19 only in these two versions.
SOURCE_FILES = {
    ("torchvision", "vgg19"): ("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                               "vgg19-dcbb9e9d.pth", "dcbb9e9d"),
    ("torchvision", "vgg16"): ("https://download.pytorch.org/models/vgg16-397923af.pth",
                               "vgg16-397923af.pth", "397923af"),
    # timm publishes no checksum vggjit could pin: the file is checked by reading it whole
    # (every layer's shape) before it is moved into place.
    ("timm", "vgg19"): ("https://huggingface.co/timm/vgg19.tv_in1k/resolve/main/model.safetensors",
                        "vgg19.tv_in1k.safetensors", None),
    ("timm", "vgg16"): ("https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors",
                        "vgg16.tv_in1k.safetensors", None),
}

#: The most a download may bring: the official files are about 510 MB; a mirror's copy is the
#: same file (its MD5 is checked), so anything past twice that is not a VGG weight file.
MAX_BYTES = 1 << 30
