"""The physical limit: the codec alone, in-process, on N cores, on the corpus bytes.

One worker process per core takes every Nth segment, reads it into memory (not
timed) and compresses it with the same Python bindings and level walq uses,
one-shot. Only the compress calls are timed: the limit is the busiest worker's
total compress time (wall clock, so a core lost to another process shows), and
the CPU seconds are those of the compress calls. Printed as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import zlib


def _compressor(codec: str, level: int | None):
    if codec == "zstd":
        import zstandard

        c = zstandard.ZstdCompressor(level=3 if level is None else level)
        return c.compress
    if codec == "lz4":
        import lz4.frame

        return lambda data: lz4.frame.compress(data, compression_level=level or 0)
    if codec == "gzip":

        def gz(data: bytes) -> bytes:
            obj = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
            return obj.compress(data) + obj.flush()

        return gz
    if codec == "none":
        return bytes
    raise SystemExit(f"unknown codec {codec}")


def _worker(paths: list[str], codec: str, level: int | None, barrier, out) -> None:
    fn = _compressor(codec, level)
    barrier.wait()
    busy = cpu = 0.0
    stored = 0
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        t0, c0 = time.perf_counter(), time.process_time()
        stored += len(fn(data))
        busy += time.perf_counter() - t0
        cpu += time.process_time() - c0
        del data
    out.put((busy, cpu, stored))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", required=True)
    ap.add_argument("--level", type=int, default=-100)
    ap.add_argument("--workers", type=int, default=mp.cpu_count())
    ap.add_argument("directory")
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    level = None if args.level == -100 else args.level
    paths = [f"{args.directory}/{n}" for n in args.names]
    shares = [paths[i :: args.workers] for i in range(args.workers)]
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(args.workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(s, args.codec, level, barrier, out)) for s in shares]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[0] for r in results)
    print(
        json.dumps(
            {"wall": wall, "cpu": sum(r[1] for r in results), "stored": sum(r[2] for r in results)}
        )
    )


if __name__ == "__main__":
    main()
