"""Warm start: seconds from the first import to the first convolution's result, in a new
process whose kernel cache is already filled (target: docs/design-notes.md, note 12).

    python -m bench.probes.warm_start
"""
import json
import time

START = time.perf_counter()   # before the imports: they are part of what is measured

import numpy as np  # noqa: E402

import vggjit  # noqa: E402


def main() -> None:
    driver = vggjit.get_driver("numba-cpu")
    x, w = np.ones((1, 3, 16, 16), np.float32), np.ones((4, 3, 3, 3), np.float32)
    driver.conv2d(x, w, np.zeros(4, np.float32), 1, 1)
    print(json.dumps({"import_and_first_conv_s": time.perf_counter() - START}))


if __name__ == "__main__":
    main()
