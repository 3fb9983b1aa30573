#!/usr/bin/env python3
"""Python's multiprocessing on the same work as shmkit's criterion benches.

Writes one JSON object to the path given as the first argument (default
target/bench-python.json): {"python": version, "results": {id: {"ns": ...,
"elements": n} or {"ns": ..., "bytes": n}}}, where "ns" is the time of one
iteration (the median of REPEAT timed runs; criterion's rows are means) and
an iteration handles "elements" operations or "bytes" bytes.
benches/report/main.rs puts these rows beside the Rust ones. Each measurement takes about a second; the whole script a few
minutes. Only the standard library is used.

Set PY_BENCH_QUICK=1 for a short run (fewer repetitions, sizes up to 64 MiB).
"""

import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from multiprocessing import shared_memory

QUICK = os.environ.get("PY_BENCH_QUICK") == "1"
REPEAT = 3 if QUICK else 5
PAGE = 4096
results = {}


def record(key, seconds_per_iter, elements=None, nbytes=None):
    row = {"ns": seconds_per_iter * 1e9}
    if nbytes is not None:
        row["bytes"] = nbytes
    else:
        row["elements"] = elements if elements is not None else 1
    results[key] = row
    unit = f"{nbytes} B" if nbytes is not None else f"{row['elements']} op"
    print(f"  {key:55s} {row['ns']:14.1f} ns / iter ({unit})", flush=True)


def median_of(fn):
    """Median over REPEAT runs of fn() -> seconds per iteration."""
    return statistics.median(fn() for _ in range(REPEAT))


# ---------------------------------------------------------------- counters

def _inc_locked(v, n, go):
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def _inc_raw(v, n, go):
    go.wait()
    for _ in range(n):
        v.value += 1


def two_processes(target, v, n):
    go = mp.Event()
    ps = [mp.Process(target=target, args=(v, n, go)) for _ in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    return (time.perf_counter() - t0) / (2 * n)


def counters():
    n = 50_000 if QUICK else 200_000
    v = mp.Value("Q", 0)
    record("python/counter-2-processes/mp-value-locked",
           median_of(lambda: two_processes(_inc_locked, v, n)))
    raw = mp.RawValue("Q", 0)
    record("python/counter-2-processes/mp-rawvalue-unlocked",
           median_of(lambda: two_processes(_inc_raw, raw, n)))

    def one():
        t0 = time.perf_counter()
        for _ in range(n):
            with v.get_lock():
                v.value += 1
        return (time.perf_counter() - t0) / n
    record("python/counter-1-process/mp-value-locked", median_of(one))


# ------------------------------------------------------------------ queues

def _produce(q, n, payload, go, sentinels=1):
    go.wait()
    for _ in range(n):
        q.put(payload)
    for _ in range(sentinels):
        q.put(None)


def _consume(q, go):
    go.wait()
    while q.get() is not None:
        pass


def queue_run(n, payload, producers=1, consumers=1):
    q = mp.Queue(maxsize=1024)
    go = mp.Event()
    per = n // producers
    ps = [mp.Process(target=_produce, args=(q, per, payload, go, consumers // producers or 1))
          for _ in range(producers)]
    cs = [mp.Process(target=_consume, args=(q, go)) for _ in range(consumers)]
    for p in ps + cs:
        p.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    go.set()
    for p in ps + cs:
        p.join()
    return (time.perf_counter() - t0) / (per * producers)


def queues():
    n = 20_000 if QUICK else 100_000
    record("python/queue/u64-spsc-mp-queue", median_of(lambda: queue_run(n, 12345)))
    record("python/queue/u64-mpmc-2x2-mp-queue", median_of(lambda: queue_run(n, 12345, 2, 2)))
    for size, label, count in [(1024, "1KiB", n // 2), (64 * 1024, "64KiB", n // 20)]:
        payload = b"\x07" * size
        record(f"python/queue/{label}-spsc-mp-queue",
               median_of(lambda: queue_run(count, payload)), nbytes=size)
        record(f"python/queue/{label}-mpmc-2x2-mp-queue",
               median_of(lambda: queue_run(count, payload, 2, 2)), nbytes=size)


# -------------------------------------------------------------- ping-pong

def _echo_pipe(conn):
    while True:
        v = conn.recv()
        if v is None:
            return
        conn.send(v + 1)


def _echo_queue(a, b):
    while True:
        v = a.get()
        if v is None:
            return
        b.put(v + 1)


def ping_pong():
    n = 5_000 if QUICK else 20_000

    def round_trips(send, recv, echo, args):
        """n round trips with a child running `echo(*args)`, after one warm-up."""
        p = mp.Process(target=echo, args=args)
        p.start()
        send(0)
        recv()
        t0 = time.perf_counter()
        for i in range(n):
            send(i)
            recv()
        dt = time.perf_counter() - t0
        send(None)
        p.join()
        return dt / n

    def pipe():
        here, there = mp.Pipe()
        return round_trips(here.send, here.recv, _echo_pipe, (there,))
    record("python/ping-pong/mp-pipe", median_of(pipe))

    def queue():
        a, b = mp.Queue(), mp.Queue()
        return round_trips(a.put, b.get, _echo_queue, (a, b))
    record("python/ping-pong/mp-queue", median_of(queue))


# ---------------------------------------------------------------- handoff

def touch(view):
    return sum(view[::PAGE])


def dirty(view, v):
    """Writes one byte of every page: fresh data, as the Rust producers do."""
    view[::PAGE] = bytes([v & 0xFF]) * len(range(0, len(view), PAGE))


def _send_bytes(conn, size, n):
    buf = bytearray(b"\x07" * size)
    view = memoryview(buf)
    for i in range(n):
        dirty(view, i)
        conn.send_bytes(buf)


def _send_len(conn, size, n, name):
    shm = shared_memory.SharedMemory(name=name)
    dirty(shm.buf, 0)  # pages mapped before the clock starts, as in the Rust rows
    conn.send("ready")
    for i in range(n):
        dirty(shm.buf, i)
        conn.send(size)
    shm.close()


def handoff():
    sizes = [(4 << 10, "4KiB"), (1 << 20, "1MiB"), (64 << 20, "64MiB")]
    if not QUICK:
        sizes.append((1 << 30, "1GiB"))
    for size, label in sizes:
        n = max(2, min(20_000, (256 << 20) // size))

        def through_pipe():
            here, there = mp.Pipe()
            p = mp.Process(target=_send_bytes, args=(there, size, n))
            buf = bytearray(size)
            view = memoryview(buf)
            p.start()
            t0 = time.perf_counter()
            for _ in range(n):
                here.recv_bytes_into(buf)
                touch(view)
            dt = time.perf_counter() - t0
            p.join()
            return dt / n
        record(f"python/handoff/{label}-mp-pipe-send-bytes", median_of(through_pipe), nbytes=size)

        def zero_copy():
            shm = shared_memory.SharedMemory(create=True, size=size)
            try:
                chunk = b"\x07" * min(size, 64 << 20)
                for off in range(0, size, len(chunk)):
                    shm.buf[off:off + len(chunk)] = chunk[:size - off]
                here, there = mp.Pipe()
                p = mp.Process(target=_send_len, args=(there, size, n, shm.name))
                p.start()
                here.recv()  # ready
                t0 = time.perf_counter()
                for _ in range(n):
                    k = here.recv()
                    touch(shm.buf[:k])
                dt = time.perf_counter() - t0
                p.join()
                return dt / n
            finally:
                shm.close()
                shm.unlink()
        record(f"python/handoff/{label}-shared-memory-zero-copy", median_of(zero_copy),
               nbytes=size)


# ------------------------------------------------------------------- pool

def _identity(x):
    return x


def pool():
    items = 1_000_000
    with mp.Pool(2) as p:
        p.map(_identity, range(1000))

        def map_1m():
            t0 = time.perf_counter()
            p.map(_identity, range(items))
            return time.perf_counter() - t0
        record("python/pool/map-1M-mp-pool", median_of(map_1m), elements=items)

        n = 500 if QUICK else 2000

        def round_trip():
            t0 = time.perf_counter()
            for i in range(n):
                p.apply_async(_identity, (i,)).get()
            return (time.perf_counter() - t0) / n
        record("python/pool/apply-async-round-trip-mp-pool", median_of(round_trip))


# ------------------------------------------------------------ spawn, join

def _noop():
    pass


def spawn_join():
    for method, n in [("fork", 50 if QUICK else 200), ("spawn", 5 if QUICK else 20)]:
        ctx = mp.get_context(method)

        def start_join():
            t0 = time.perf_counter()
            for _ in range(n):
                p = ctx.Process(target=_noop)
                p.start()
                p.join()
            return (time.perf_counter() - t0) / n
        record(f"python/process/start-join-{method}", median_of(start_join))


# -------------------------------------------------------------------- map

def _dict_worker(d, keys, go):
    go.wait()
    for k in keys:
        d[k] = k


def manager_dict():
    n = 5_000 if QUICK else 20_000
    with mp.Manager() as m:
        d = m.dict()

        def insert():
            t0 = time.perf_counter()
            for k in range(n):
                d[k] = k
            return (time.perf_counter() - t0) / n
        record("python/map/insert-1-manager-dict", median_of(insert))

        def get():
            t0 = time.perf_counter()
            for k in range(n):
                d[k]
            return (time.perf_counter() - t0) / n
        record("python/map/get-1-manager-dict", median_of(get))

        def insert_2():
            go = mp.Event()
            ps = [mp.Process(target=_dict_worker, args=(d, range(h, n, 2), go)) for h in (0, 1)]
            for p in ps:
                p.start()
            time.sleep(0.05)
            t0 = time.perf_counter()
            go.set()
            for p in ps:
                p.join()
            return (time.perf_counter() - t0) / n
        record("python/map/insert-2-manager-dict", median_of(insert_2))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/bench-python.json"
    # Further arguments name sections to run again; their rows replace those
    # in an existing output file.
    only = sys.argv[2:]
    mp.set_start_method("fork")
    print(f"Python {platform.python_version()} multiprocessing, median of {REPEAT}", flush=True)
    if only and os.path.exists(out):
        with open(out) as f:
            results.update(json.load(f)["results"])
    for part in (counters, queues, ping_pong, handoff, pool, spawn_join, manager_dict):
        if only and part.__name__ not in only:
            continue
        print(f"- {part.__name__}", flush=True)
        part()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({"python": platform.python_version(), "quick": QUICK, "results": results}, f,
                  indent=1, sort_keys=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
