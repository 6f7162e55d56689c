#!/usr/bin/env python3
"""How a large file's writeback delays a small synced write on the same disk (what the Raft
log's fsyncs go through while a snapshot file is written). A thread loops 4 KiB
write + fdatasync every 2 ms on one file while the main thread writes MIB MiB to another file
(1 MiB per 5 ms) and syncs it, either once at the end ("end") or every N MiB ("syncN");
prints the small writes' latency. Run it in a directory on the disk to test.
Usage: scripts/bench-sync-bursts.py end|syncN [MIB=300]"""
import os
import sys
import threading
import time

mode = sys.argv[1]
mib = int(sys.argv[2]) if len(sys.argv) > 2 else 300
every = int(mode[4:]) if mode.startswith("sync") else None
stop = False
latencies = []


def small_writes():
    fd = os.open("bench-small.dat", os.O_WRONLY | os.O_CREAT, 0o644)
    while not stop:
        t = time.monotonic()
        os.pwrite(fd, b"x" * 4096, 0)
        os.fdatasync(fd)
        latencies.append(time.monotonic() - t)
        time.sleep(0.002)
    os.close(fd)


thread = threading.Thread(target=small_writes)
thread.start()
time.sleep(0.5)
fd = os.open("bench-big.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = os.urandom(1 << 20)
started = time.monotonic()
unsynced = 0
for _ in range(mib):
    os.write(fd, chunk)
    unsynced += 1
    if every and unsynced >= every:
        os.fdatasync(fd)
        unsynced = 0
    time.sleep(0.005)
os.fsync(fd)
took = time.monotonic() - started
time.sleep(0.5)
stop = True
thread.join()
os.close(fd)
os.unlink("bench-big.dat")
os.unlink("bench-small.dat")
latencies.sort()
n = len(latencies)
print(f"{mode} {mib} MiB: written and synced in {took:.2f} s; {n} small synced writes: "
      f"p50 {latencies[n // 2] * 1e3:.1f} ms, p99 {latencies[int(n * 0.99)] * 1e3:.1f} ms, "
      f"max {latencies[-1] * 1e3:.1f} ms")
