"""vggjit benchmarks: run with `vggjit bench` or `python -m bench` (figures never live in tests)."""
