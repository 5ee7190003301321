"""Regenerate the shipped loss expansions (looptheory/data/loss_L{L}_{part}.json.gz) and the
evaluation layouts built from them (looptheory/data/layout_L{L}_{form}.npz).

Run: python scripts/build_expansions.py [MAX_LOOPS]   (loops = 6 takes about 2 minutes, 1.5 GB;
the centred main part, shipped for loops <= 4, takes 6 s at loops = 4)
     python scripts/build_expansions.py --layouts [MAX_LOOPS]   (the layouts alone, from the
shipped expansions: a few seconds)
The tests rebuild the small ones and compare, and check the large ones against independent
routes (tests/test_shipped_expansions.py).
"""

import gzip
import json
import os
import sys
import time

from looptheory.layout import save_arrays
from looptheory.loss import (
    CENTRED_MAX_LOOPS,
    LAYOUT_PARTS,
    PARTS,
    build_centred_main,
    build_layout,
    build_part_expansion,
    data_path,
    layout_path,
    part_expansion,
)

args = sys.argv[1:]
layouts_only = "--layouts" in args
args = [a for a in args if a != "--layouts"]
top = int(args[0]) if args else 6
for L in range(1, top + 1):
    if not layouts_only:
        for part in PARTS + (("centred",) if L <= CENTRED_MAX_LOOPS else ()):
            t = time.perf_counter()
            e = build_centred_main(L) if part == "centred" else build_part_expansion(L, part)
            with gzip.open(data_path(L, part), "wt", compresslevel=9) as fh:
                json.dump(e.to_json(), fh, separators=(",", ":"))
            print(f"loops={L} part={part}: {len(e)} terms, {len(e.constant_words())} words, {time.perf_counter() - t:.1f} s", flush=True)
        part_expansion.cache_clear()
    for form in LAYOUT_PARTS:
        if form == "centred" and L > CENTRED_MAX_LOOPS:
            continue
        t = time.perf_counter()
        arrays = build_layout(L, form)
        save_arrays(layout_path(L, form), arrays)
        size = os.path.getsize(layout_path(L, form))
        print(f"loops={L} layout={form}: {len(arrays['node_parent'])} trie nodes, {len(arrays['leaf_x'])} monomials, "
              f"{size / 1e3:.0f} kB, {time.perf_counter() - t:.1f} s", flush=True)
