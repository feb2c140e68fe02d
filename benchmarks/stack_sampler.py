"""Run a module as ``python -m`` would, sampling every thread's Python stack meanwhile: a
stand-in for py-spy where it cannot attach (a container without ptrace).

    python benchmarks/stack_sampler.py OUT.json [--every 0.02] -m lorawatch canary run ...

Every ``--every`` seconds a thread reads ``sys._current_frames()`` and keeps, per thread, the
stack as (file, function) pairs, root first. The samples are written to OUT.json when the
module exits (also on SystemExit): ``{"every": s, "threads": {tid: name}, "samples": [[t, tid,
[[file, function], ...]], ...]}``; also when the module ends the process with ``os._exit``
after running the exit handlers, as ``lorawatch`` does. The sampler needs the interpreter's lock to sample, so a
thread busy in C code for long is seen only when the lock is released; at 20 ms the cost to
the program is a few percent.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import threading
import time


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    every = 0.02
    if rest[:1] == ["--every"]:
        every, rest = float(rest[1]), rest[2:]
    if rest[:1] != ["-m"] or len(rest) < 2:
        raise SystemExit("usage: stack_sampler.py OUT.json [--every S] -m MODULE [ARGS...]")
    module, sys.argv = rest[1], [rest[1], *rest[2:]]
    samples: list = []
    names: dict[int, str] = {}
    stop = threading.Event()
    me: int | None = None  # the sampler's own thread, skipped once it runs
    origin = time.perf_counter()

    def sample() -> None:
        while not stop.wait(every):
            t = round(time.perf_counter() - origin, 4)
            for thread in threading.enumerate():
                names.setdefault(thread.ident or 0, thread.name)
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                stack = []
                while frame is not None:
                    stack.append([frame.f_code.co_filename, frame.f_code.co_name])
                    frame = frame.f_back
                samples.append([t, tid, stack[::-1]])

    def write() -> None:
        if stop.is_set():
            return
        stop.set()
        sampler.join()
        with open(out, "w", encoding="utf-8") as handle:
            json.dump({"every": every, "threads": names, "samples": samples}, handle)

    sampler = threading.Thread(target=sample, name="stack-sampler", daemon=True)
    sampler.start()
    me = sampler.ident
    atexit.register(write)  # lorawatch ends with os._exit after the exit handlers (cli.leave)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        write()


if __name__ == "__main__":
    main()
