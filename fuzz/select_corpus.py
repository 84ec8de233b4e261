#!/usr/bin/env python3
"""Picks the committed regression corpus of a fuzz target from its working corpus.

    python3 fuzz/select_corpus.py <target> <working corpus dir> <out dir> [max files]

Runs the built target (fuzz/target/x86_64-unknown-linux-gnu/release/<target>) on each input
alone with libFuzzer's merge (-use_counters=0: edges, not hit counts) to get the full set
of coverage features of each input, then greedily takes the input that adds the most
features not yet covered (the smaller one on a tie) until everything is covered or `max
files` (default 300) are taken. Prints the share of the features reached. Inputs that make
the target fail are left out and listed: they are findings (tests/fuzz-corpus/findings/,
docs/fuzzing.md). See docs/fuzzing.md for the whole procedure.
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))


def features(binary, path, env):
    """The input's coverage features, or None when the target fails on it."""
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(f"{d}/in")
        os.mkdir(f"{d}/out")
        shutil.copy(path, f"{d}/in/x")
        run = subprocess.run([binary, "-runs=1", path], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if run.returncode != 0:
            return None
        subprocess.run([binary, "-merge=1", "-use_counters=0",
                        f"-merge_control_file={d}/ctl", f"{d}/out", f"{d}/in"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        for line in open(f"{d}/ctl"):
            p = line.split()
            if p and p[0] == "FT":
                return set(map(int, p[2:]))
    return set()


def main():
    target, src, out = sys.argv[1:4]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    binary = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release", target)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(ROOT, "..", ".duckdb", "lib")
    feats, size, failing = {}, {}, []
    for name in sorted(os.listdir(src)):
        f = features(binary, os.path.join(src, name), env)
        if f is None:
            failing.append(name)
            continue
        feats[name] = f
        size[name] = os.path.getsize(os.path.join(src, name))
    universe = set().union(*feats.values()) if feats else set()
    chosen, covered = [], set()
    while len(chosen) < limit and covered != universe:
        best = max(feats, key=lambda n: (len(feats[n] - covered), -size[n]))
        if not feats[best] - covered:
            break
        chosen.append(best)
        covered |= feats[best]
    os.makedirs(out, exist_ok=True)
    for name in chosen:
        shutil.copy(os.path.join(src, name), os.path.join(out, name))
    print(f"{target}: {len(chosen)} of {len(feats)} inputs, {len(covered)} of {len(universe)} "
          f"features ({len(covered) / max(len(universe), 1):.1%}), "
          f"{sum(size[n] for n in chosen)} bytes")
    if failing:
        print(f"{len(failing)} inputs fail the target (findings): {' '.join(failing)}")


if __name__ == "__main__":
    main()
