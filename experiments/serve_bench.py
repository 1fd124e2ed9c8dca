"""`fssam2 serve` measured through a real browser: seconds from the click on Segment to the mask on
the page, and the server's memory after 100 requests against after 1 (and 10).

The server is the real command (`fssam2 serve`, its default model: the packaged tiny SAM2 with the
hue adapter, the examples preloaded, on CPU) in its own process; Debian's Chromium, driven by
Playwright, presses Segment on the preloaded example (1 support, 3 queries) and waits for the
masks. Memory is the server process's peak resident set (VmHWM) and resident set (VmRSS) from
/proc, read after the first request and after the last.

    python experiments/serve_bench.py [--requests 100] [--timed 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(*options: str, threads: int = 1, timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """`fssam2 serve OPTIONS` on a free loopback port, in its own process; yields (url, process)
    once the page answers, and stops it afterwards."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "fssam2.cli", "serve", "--port", str(port), "--device", "cpu", *options]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SystemExit(f"fssam2 serve ended ({process.returncode}): {process.stderr.read()}")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"fssam2 serve did not answer on {url} within {timeout:g} s") from None
                time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator:
    """A page of Debian's Chromium (apt-get install chromium), driven by Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def segment_once(page, count: int) -> float:
    """Press Segment and wait until the page shows this request's masks; returns the seconds it took."""
    start = time.perf_counter()
    page.click("#segment")
    page.wait_for_function(
        "n => document.querySelector('#download a') && document.querySelector('#download a').href.endsWith(`_${n}.zip`)",
        arg=count,
        timeout=120_000,
    )
    return time.perf_counter() - start


def memory_mb(pid: int) -> dict[str, float]:
    """The process's peak resident set (VmHWM) and resident set (VmRSS), MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--requests", type=int, default=100, help="requests in all (memory is read after 1 and after these)"
    )
    parser.add_argument("--timed", type=int, default=20, help="the last this many requests are timed")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the server (OMP_NUM_THREADS)")
    opts = parser.parse_args()
    with served(threads=opts.threads) as (url, process), chromium_page() as page:
        page.goto(url)
        page.wait_for_selector("#segment")
        seconds, memory = [], {}
        for n in range(1, opts.requests + 1):
            seconds.append(segment_once(page, n))
            if n in (1, 10, 100, opts.requests):
                memory[n] = memory_mb(process.pid)
    first, timed = seconds[0], seconds[-opts.timed :]
    print(f"fssam2 serve, default model (tiny SAM2 + fssam2_tiny_hue), CPU, {opts.threads} thread(s); "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
    print("click on Segment -> masks on the page (1 support, 3 queries of 128x128, Chromium):")
    print(f"  first request       {first:6.2f} s")
    print(
        f"  median of last {len(timed):<4} {statistics.median(timed):6.2f} s  (min {min(timed):.2f}, max {max(timed):.2f})"
    )
    print("server memory, MB   " + "".join(f"{f'after {n}':>11}" for n in memory))
    for key, name in (("VmHWM", "peak (VmHWM)"), ("VmRSS", "resident (VmRSS)")):
        growth = memory[max(memory)][key] - memory[1][key]
        print(
            f"  {name:<18}"
            + "".join(f"{m[key]:>11.0f}" for m in memory.values())
            + f"  ({growth:+.0f} from 1 to {max(memory)})"
        )


if __name__ == "__main__":
    main()
