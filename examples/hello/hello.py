"""A tiny job: shows the arguments torchjob passes, a progress line, and a clean exit."""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", default="hello")
parser.add_argument("--name", default="world")
parser.add_argument("--shout", action="store_true")
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait between steps")
opts = parser.parse_args()

text = f"{opts.greeting}, {opts.name}!"
print(text.upper() if opts.shout else text)
for step in range(1, opts.steps + 1):
    print(f"\rstep {step}/{opts.steps}", end="", flush=True)
    time.sleep(opts.delay)
print()
print(f"run {os.environ.get('TORCHJOB_RUN_ID', '?')} on Python {sys.version.split()[0]}")
