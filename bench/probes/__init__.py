"""Benchmark probes that need a fresh interpreter: each module is run as
``python -m bench.probes.NAME [args]`` by :func:`bench.common.run_probe` and prints one JSON
object as its last line of output (docs/design-notes.md, note 12)."""
