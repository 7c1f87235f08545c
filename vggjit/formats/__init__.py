"""Readers of VGG weight files from other frameworks, each turning a file into the same parts
vggjit's own MatConvNet reader produces (see docs/formats.md).

One module per format, none of which needs the framework that wrote the file:

* :mod:`.torch_file`: PyTorch checkpoints, zip and legacy (pre-1.6) format, through a restricted
  unpickler (:mod:`.safe_pickle`),
* :mod:`.safetensors_file`: safetensors (the ``safetensors`` package),
* :mod:`.onnx_file`: ONNX graphs (the ``onnx`` package), followed node by node,
* :mod:`.keras_file`: Keras HDF5 weight files (``h5py``),
* :mod:`.state_dict`: torchvision's and timm's parameter names -> VGG layers (PyTorch and
  safetensors files share it),
* :mod:`.layout`: checks the layers found against the VGG layer table, converts fc6's flatten
  order, and builds the layer table (also for convolution-only networks),
* :mod:`.preprocess`: the input conventions and their exact fold into vggjit's canonical input,
* :mod:`.sniff`: which format a file is, from its first bytes,
* :mod:`.optional`: the one-line error when an optional reader package is missing,
* :mod:`.locations`: where torch hub, the Hugging Face hub and Keras keep downloaded weights.

``vggjit.weights.load_weights`` dispatches to them.
"""

#: The input conventions ``--preprocess`` names (:mod:`.preprocess` defines them); here, free of
#: imports, so that building the CLI parser stays fast.
PREPROCESS_CHOICES = ("torchvision", "caffe", "matconvnet", "none")
