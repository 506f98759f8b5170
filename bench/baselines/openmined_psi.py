#!/usr/bin/env python3
"""Baseline: OpenMined PSI (PyPI `openmined.psi`) throughput, single thread.

What this measures
    Pavilion's "batch PSI" lets a client holding a set of identifiers learn
    its intersection with a data provider's set (or only the intersection's
    size). To know whether our elements/s figures are any good, we compare
    them with a well-known open-source PSI: OpenMined's ECDH-based PSI
    (P-256 via BoringSSL, C++ core behind a pybind11 wrapper). This script
    runs its full protocol in one process and one thread:

        server setup    server key + CreateSetupMessage(fpr=1e-9, ...)
                        (hash-to-curve + 1 EC scalar mult per server element,
                        then build the chosen data structure: GCS, Bloom
                        filter or raw sorted list)
        client request  client key + CreateRequest
                        (hash-to-curve + 1 EC scalar mult per client element)
        server process  ProcessRequest (1 EC scalar mult per client element;
                        sorted when only the cardinality is revealed)
        client finish   GetIntersection / GetIntersectionSize
                        (1 EC scalar mult per client element + look-ups)

    Each phase is timed with time.perf_counter (wall clock; the process CPU
    time is recorded beside it, to spot a busy machine). Messages stay in
    memory (no network), but the library's Python wrapper serialises and
    re-parses its protobuf messages between the C++ and Python sides, so
    that cost is included, as it would be in any real use of the package.

    Reported, for the best of --repeat runs (lowest total time):
        online_elements_per_s = client_size / (request + process + finish)
        setup_elements_per_s  = server_size / server setup
        total_elements_per_s  = client_size / (setup + request + process + finish)

    Data structure: GCS by default (the library's own default, the smallest
    setup message, false-positive rate 1e-9 over the whole query). Bloom
    filter and raw run within noise of it, since EC work dominates; use
    --data-structure all to see all three.

    The result is checked against the known overlap (indices for
    --reveal-intersection, the count for --cardinality-only); a mismatch
    exits with status 1.

Why single thread
    The comparison with Pavilion is per core. The library has no threading
    knob of its own and its extension module never creates a thread (it
    imports no pthread_create); the usual thread-count variables are still
    set to 1 before any native import, and the number of OS threads of this
    process is recorded in the output.

Example
    python bench/baselines/openmined_psi.py --client-size 10000 \\
        --server-size 100000 --json /tmp/openmined_psi.json
"""

import os

# Before any native import: keep every library that honours these to 1 thread.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

FPR = 1e-9
PYPI_NAME = "openmined.psi"
DATA_STRUCTURES = {"gcs": "GCS", "bloom": "BLOOM_FILTER", "raw": "RAW"}
MODES = {"reveal-intersection": True, "cardinality-only": False}
PHASES = ("server_setup", "client_request", "server_process", "client_finish")


def import_psi():
    """Return (module, import name).

    2.x wheels install `private_set_intersection.python`; releases before 2.0
    installed a top-level `openmined_psi` whose API has no DataStructure, so
    this script needs 2.x (see requirements.txt).
    """
    try:
        import private_set_intersection.python as psi
    except ImportError:
        sys.exit(f"{PYPI_NAME} 2.x is not installed: "
                 "pip install -r bench/baselines/requirements.txt")
    return psi, "private_set_intersection.python"


def make_sets(client_size, server_size, overlap, seed):
    """Deterministic e-mail-like identifiers.

    Returns (client, server, expected): `expected` holds the indices of the
    client elements that are also in the server set, sorted.
    """
    shared = round(overlap * client_size)
    if shared > server_size:
        sys.exit(f"overlap {overlap} of {client_size} needs {shared} shared "
                 f"elements, more than the server's {server_size}")
    rng = random.Random(seed)
    ids = rng.sample(range(10**10), client_size + server_size - shared)
    names = [f"user{i}@example.org" for i in ids]
    client = names[:client_size]
    server = names[:shared] + names[client_size:]
    rng.shuffle(client)
    rng.shuffle(server)
    in_server = set(names[:shared])
    expected = [i for i, x in enumerate(client) if x in in_server]
    return client, server, expected


def run_once(psi, ds, reveal, client_items, server_items, expected):
    """One full protocol run; returns phase seconds and message sizes."""
    gc.collect()
    wall, cpu = [time.perf_counter()], [time.process_time()]

    def mark():
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    server = psi.server.CreateWithNewKey(reveal)
    setup = server.CreateSetupMessage(FPR, len(client_items), server_items, ds)
    mark()
    client = psi.client.CreateWithNewKey(reveal)
    request = client.CreateRequest(client_items)
    mark()
    response = server.ProcessRequest(request)
    mark()
    if reveal:
        result = client.GetIntersection(setup, response)
    else:
        result = client.GetIntersectionSize(setup, response)
    mark()

    if reveal and sorted(result) != expected:
        sys.exit(f"WRONG intersection ({ds.name}): got {len(result)} indices, "
                 f"expected {len(expected)}")
    if not reveal and result != len(expected):
        sys.exit(f"WRONG cardinality ({ds.name}): got {result}, "
                 f"expected {len(expected)}")

    return {
        "phases_s": dict(zip(PHASES, (b - a for a, b in zip(wall, wall[1:])))),
        "phases_cpu_s": dict(zip(PHASES, (b - a for a, b in zip(cpu, cpu[1:])))),
        "message_bytes": {
            "setup": setup.ByteSize(),
            "request": request.ByteSize(),
            "response": response.ByteSize(),
        },
    }


def summarise(runs, client_size, server_size):
    best = min(runs, key=lambda r: sum(r["phases_s"].values()))
    p = best["phases_s"]
    online = p["client_request"] + p["server_process"] + p["client_finish"]
    total = online + p["server_setup"]
    return {
        "phases_s": p,
        "phases_cpu_s": best["phases_cpu_s"],
        "online_s": online,
        "total_s": total,
        "online_elements_per_s": client_size / online,
        "setup_elements_per_s": server_size / p["server_setup"],
        "total_elements_per_s": client_size / total,
        "message_bytes": best["message_bytes"],
        "all_runs_total_s": [sum(r["phases_s"].values()) for r in runs],
    }


def os_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def parse_args():
    ap = argparse.ArgumentParser(
        description="Time OpenMined PSI (PyPI openmined.psi) end to end on one "
                    "thread, as a baseline for Pavilion's batch PSI. Prints one "
                    "JSON object on stdout; progress goes to stderr.")
    ap.add_argument("--client-size", type=int, default=10000, metavar="N",
                    help="client set size (default 10000)")
    ap.add_argument("--server-size", type=int, default=100000, metavar="M",
                    help="server (data provider) set size (default 100000)")
    ap.add_argument("--overlap", type=float, default=0.5, metavar="F",
                    help="fraction of the client set that is in the server set "
                         "(default 0.5)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--reveal-intersection", action="store_true",
                      help="only the mode where the client learns which elements "
                           "intersect (default: run both modes)")
    mode.add_argument("--cardinality-only", action="store_true",
                      help="only the mode where the client learns just the "
                           "intersection size (default: run both modes)")
    ap.add_argument("--data-structure", choices=[*DATA_STRUCTURES, "all"],
                    default="gcs",
                    help="server setup structure: gcs (Golomb-compressed set, "
                         "the library's default and smallest message), bloom, "
                         "raw (sorted encrypted elements, exact, ~35 B per "
                         "server element), or all three. Run times are within "
                         "noise of each other (EC work dominates); default gcs")
    ap.add_argument("--seed", type=int, default=1, help="seed for the identifiers "
                    "(default 1); keys are fresh each run, as in the library")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per configuration; the one with the lowest total "
                         "time is reported (default 3)")
    ap.add_argument("--json", metavar="PATH",
                    help="also write the JSON object to PATH")
    args = ap.parse_args()
    if args.client_size < 1 or args.server_size < 1 or args.repeat < 1:
        ap.error("sizes and --repeat must be positive")
    if not 0.0 <= args.overlap <= 1.0:
        ap.error("--overlap must be in [0, 1]")
    return args


def main():
    args = parse_args()
    psi, import_name = import_psi()

    if args.reveal_intersection:
        modes = ["reveal-intersection"]
    elif args.cardinality_only:
        modes = ["cardinality-only"]
    else:
        modes = list(MODES)
    ds_names = ([args.data_structure] if args.data_structure != "all"
                else list(DATA_STRUCTURES))

    client, server, expected = make_sets(args.client_size, args.server_size,
                                         args.overlap, args.seed)
    results = []
    for ds_name in ds_names:
        ds = psi.DataStructure[DATA_STRUCTURES[ds_name]]
        for mode in modes:
            runs = []
            for i in range(args.repeat):
                runs.append(run_once(psi, ds, MODES[mode], client, server, expected))
                print(f"{ds_name} {mode} run {i + 1}/{args.repeat}: "
                      f"{sum(runs[-1]['phases_s'].values()):.3f} s",
                      file=sys.stderr, flush=True)
            results.append({"mode": mode, "data_structure": ds_name,
                            **summarise(runs, args.client_size, args.server_size)})

    try:
        version = metadata.version(PYPI_NAME)
    except metadata.PackageNotFoundError:
        version = getattr(psi, "__version__", None)
    out = {
        "benchmark": "openmined_psi_baseline",
        "library": {"name": PYPI_NAME, "import": import_name, "version": version,
                    "protocol": "ECDH-PSI, P-256, SHA-256 hash-to-curve"},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "params": {"client_size": args.client_size, "server_size": args.server_size,
                   "overlap": args.overlap, "intersection_size": len(expected),
                   "seed": args.seed, "repeat": args.repeat, "fpr": FPR,
                   "data_structures": ds_names},
        "threads": {
            "os_threads_observed": os_threads(),
            "env": {v: os.environ[v] for v in THREAD_VARS},
            "note": "single thread: openmined.psi has no threading knob and its "
                    "extension never spawns threads; calls run on the caller's thread",
        },
        "results": results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
