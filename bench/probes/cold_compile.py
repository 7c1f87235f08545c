"""Cold compile: seconds to import vggjit and to compile every numba-cpu kernel; the parent
points NUMBA_CACHE_DIR at an empty directory.

    python -m bench.probes.cold_compile
"""
import json
import time

START = time.perf_counter()   # before the import: it is part of what is measured

import vggjit  # noqa: E402


def main() -> None:
    driver = vggjit.get_driver("numba-cpu")
    imported = time.perf_counter()
    driver.warmup()
    compiled = time.perf_counter()
    print(json.dumps({"import_s": imported - START, "compile_all_s": compiled - imported}))


if __name__ == "__main__":
    main()
