"""The official VGG19 downloads (docs/formats.md; the file: docs/equations.md, section 4).

Kept import-free so that the CLI parser stays fast."""

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

#: The most a download may bring: the official files are about 510 MB; a mirror's copy is the
#: same file (its MD5 is checked), so anything past twice that is not a VGG weight file.
MAX_BYTES = 1 << 30
