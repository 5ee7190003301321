"""Regenerate the shipped loss expansions (looptheory/data/loss_L{L}_{part}.json.gz) and the
evaluation layouts built from them (looptheory/data/layout_L{L}_{form}.npz); with --multilayer,
the layouts of the untied multi-layer loss instead (looptheory/data/multilayer_L{L}_{form}.npz,
built with the engine directly: no JSON is shipped for them).

Run: python scripts/build_expansions.py [MAX_LOOPS]   (loops = 6 takes about 2 minutes, 1.5 GB;
the centred main part, shipped for loops <= 4, takes 6 s at loops = 4)
     python scripts/build_expansions.py --layouts [MAX_LOOPS]   (the layouts alone, from the
shipped expansions: a few seconds)
     python scripts/build_expansions.py --multilayer [MAX_LAYERS]   (4 layers: about 40 CPU-s
and 0.8 GB; the centred form ships for up to 3 layers, where it takes about 1 CPU-s: at 4 it
has 1.7 M terms and would take 3 minutes and 2.6 GB)
The tests rebuild the small ones and compare, and check the large ones against independent
routes (tests/test_shipped_expansions.py, tests/test_multilayer.py).
"""

import gzip
import json
import os
import sys
import time

from looptheory import multilayer
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


def write_layout(label, build, path):
    t = time.process_time()
    arrays = build()
    save_arrays(path, arrays)
    print(f"{label}: {len(arrays['term_coef'])} terms, {len(arrays['word_pre'])} words, {len(arrays['node_parent'])} trie "
          f"nodes, {len(arrays['leaf_x'])} monomials, {os.path.getsize(path) / 1e3:.0f} kB, "
          f"{time.process_time() - t:.1f} CPU-s", flush=True)


args = sys.argv[1:]
layouts_only = "--layouts" in args
multi = "--multilayer" in args
args = [a for a in args if a not in ("--layouts", "--multilayer")]
top = int(args[0]) if args else (multilayer.MAX_LAYERS if multi else 6)
for L in range(1, top + 1):
    if multi:
        for form in LAYOUT_PARTS:
            if form == "S" or L <= multilayer.CENTRED_MAX_LAYERS:
                write_layout(f"layers={L} layout={form}", lambda: multilayer.build_layout(L, form),
                             multilayer.layout_path(L, form))
        continue
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
        write_layout(f"loops={L} layout={form}", lambda: build_layout(L, form), layout_path(L, form))
