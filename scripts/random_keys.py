"""Long random-key runs of the playground on the tiny test model (CI runs a short one:
tests/tui/test_random_keys.py).

    python scripts/random_keys.py --seeds 0-19 --bursts 40 --burst-len 50

Each seed opens a fresh playground, sends bursts of keys drawn from every binding of
every screen plus navigation, ctrl, function keys and text, and checks after each burst
that the app is alive, nothing had to be contained, and the feature panel matches the
engine. Prints one line per seed; exits 1 if any seed failed (its error log is named).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "tui")]

import conftest  # noqa: E402,F401 - offline Hub, a throwaway state folder, 1-2 threads
from builders import make_engine  # noqa: E402
from monkey import disarm, run_monkey  # noqa: E402

from steer.tui.app import PlaygroundApp  # noqa: E402


async def one(seed: int, bursts: int, burst_len: int) -> str:
    folder = Path(tempfile.mkdtemp(prefix=f"steer-monkey-{seed}-"))
    os.chdir(folder)  # a typed preset name may be a relative path
    app = PlaygroundApp(make_engine(folder), session_path=folder / "session.json")
    app.errors_log = folder / "errors.log"
    disarm(app)
    start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        sent = await run_monkey(app, pilot, seed, bursts, burst_len)
    return f"{sent} keys, {len(app.runs)} runs, {time.perf_counter() - start:.1f} s"


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-9", help="a seed or a range, e.g. 0-19")
    parser.add_argument("--bursts", type=int, default=40)
    parser.add_argument("--burst-len", type=int, default=50)
    args = parser.parse_args()
    failed = 0
    for seed in seeds(args.seeds):
        try:
            print(f"seed {seed}: ok, {asyncio.run(one(seed, args.bursts, args.burst_len))}")
        except Exception as err:  # noqa: BLE001 - report and go on to the next seed
            failed += 1
            print(f"seed {seed}: FAILED {type(err).__name__}: {str(err)[:2000]}")
        sys.stdout.flush()
    print(f"{failed} of {len(seeds(args.seeds))} seeds failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
