"""Many images at once: batch classification and style transfer, in-process or on Dask.

One concern per module:

* :mod:`.inputs`: files, directories, globs and manifests, streamed and counted;
* :mod:`.results`: result files (JSON lines, CSV, Parquet) written as tasks complete, resumed;
* :mod:`.tasks`: the classification task and the network kept once per process;
* :mod:`.local`: the in-process runner (decoding overlapped with compute);
* :mod:`.cluster`: the Dask runner (local cluster or an existing scheduler; Dask is optional);
* :mod:`.worker_setup`: the local cluster's worker plugin (imported only where Dask is);
* :mod:`.progress`: the progress bar and the summary;
* :mod:`.classify`: a batch classification from inputs to summary;
* :mod:`.stylize`: style transfer over many content images and styles, resumable.

See docs/scale-out.md.
"""
