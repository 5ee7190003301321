"""Regenerate the shipped loss expansions (looptheory/data/loss_L{L}_{part}.json.gz).

Run: python scripts/build_expansions.py [MAX_LOOPS]   (loops = 6 takes about 2 minutes, 1.5 GB;
the centred main part, shipped for loops <= 4, takes 6 s at loops = 4)
The tests rebuild the small ones and compare, and check the large ones against independent
routes (tests/test_shipped_expansions.py).
"""

import gzip
import json
import sys
import time

from looptheory.loss import CENTRED_MAX_LOOPS, PARTS, build_centred_main, build_part_expansion, data_path

top = int(sys.argv[1]) if len(sys.argv) > 1 else 6
for L in range(1, top + 1):
    for part in PARTS + (("centred",) if L <= CENTRED_MAX_LOOPS else ()):
        t = time.perf_counter()
        e = build_centred_main(L) if part == "centred" else build_part_expansion(L, part)
        with gzip.open(data_path(L, part), "wt", compresslevel=9) as fh:
            json.dump(e.to_json(), fh, separators=(",", ":"))
        print(f"loops={L} part={part}: {len(e)} terms, {len(e.constant_words())} words, {time.perf_counter() - t:.1f} s", flush=True)
