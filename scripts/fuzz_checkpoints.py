"""Longer fuzzing of the checkpoint readers (issue 20); the findings become cases of
``tests/checkpoints/test_fuzz.py`` (its ``FINDINGS`` list).

Two engines:

* ``atheris`` (coverage-guided, libFuzzer; ``pip install atheris``): one format per run, seeded
  with the pristine tiny file of ``tests/checkpoints/fuzz_harness.py``; vitkit's modules are
  instrumented for coverage. Limits: ``-rss_limit_mb=2048 -timeout=10``. An input is a finding when
  loading it raises anything but ``CheckpointError``, or when a format with a checksum (vitkit,
  npz, torch zip) loads it as a model that differs from the pristine one. libFuzzer writes it
  to ``OUT/crash-*`` (or ``OUT/finding-*``).
* ``random`` (no extra package): seeded random mutations (flips, truncations, insertions,
  splices of pristine pieces, JSON value swaps in headers and configs) run in batches through the
  test's worker process under the same memory and time limits; findings go to ``OUT/findings.json``
  with the mutated files kept beside it.

Examples::

    .venv/bin/python scripts/fuzz_checkpoints.py --engine atheris --format vitkit --seconds 600 --out fuzz-out
    .venv/bin/python scripts/fuzz_checkpoints.py --engine random --cases 20000 --seed 1 --out fuzz-out
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "checkpoints"))

import fuzz_harness as H  # noqa: E402

CHECKSUMMED = {"vitkit", "npz", "timm_pth"}
# Where the fuzzed bytes go inside each format (the HF directory: its config.json or weights).
TARGETS = {"vitkit": None, "npz": None, "timm_pth": None, "timm_st": None, "hf_config": "config.json",
           "hf_weights": "model.safetensors"}
HOSTILE = [None, True, False, -1, 0, 1, 2, 3, 7, 2**31, 2**63, 10**6, 10**7, -(10**9), 0.5, 1e308, float("nan"),
           float("inf"), "", "2", "abc", [], [1], [8, 8], [0, 0], {}, {"a": 1}, "x" * 1000]


def _fmt(target: str) -> str:
    return "hf" if target.startswith("hf") else target


# -- random engine ------------------------------------------------------------------------------
def _mutate_json_values(doc: Any, rng: random.Random) -> Any:
    if isinstance(doc, dict) and doc:
        k = rng.choice(sorted(doc))
        if rng.random() < 0.3 and isinstance(doc[k], (dict, list)):
            doc[k] = _mutate_json_values(doc[k], rng)
        elif rng.random() < 0.1:
            del doc[k]
        else:
            doc[k] = rng.choice(HOSTILE)
    elif isinstance(doc, list) and doc:
        i = rng.randrange(len(doc))
        doc[i] = rng.choice(HOSTILE) if rng.random() < 0.7 else _mutate_json_values(doc[i], rng)
    return doc


def mutate(data: bytes, rng: random.Random, safetensors: bool, json_doc: bool) -> tuple[bytes, str]:
    """One to three random mutations of ``data``; returns the bytes and what was done."""
    what = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.choice(("flip", "byte", "truncate", "insert", "delete", "splice", "json", "json"))
        n = len(data)
        if not n:
            break
        if op == "flip":
            o = rng.randrange(n)
            data = data[:o] + bytes([data[o] ^ (1 << rng.randrange(8))]) + data[o + 1:]
            what.append(f"flip@{o}")
        elif op == "byte":
            o = rng.randrange(n)
            data = data[:o] + bytes([rng.choice((0, 1, 0x7F, 0x80, 0xFF, ord('"'), ord("9")))]) + data[o + 1:]
            what.append(f"byte@{o}")
        elif op == "truncate":
            o = rng.randrange(n)
            data, what = data[:o], [*what, f"truncate@{o}"]
        elif op == "insert":
            o = rng.randrange(n)
            data = data[:o] + rng.randbytes(rng.choice((1, 4, 8, 64))) + data[o:]
            what.append(f"insert@{o}")
        elif op == "delete":
            o = rng.randrange(n)
            data = data[:o] + data[o + rng.choice((1, 4, 8, 64)):]
            what.append(f"delete@{o}")
        elif op == "splice":
            a, b = sorted(rng.randrange(n) for _ in range(2))
            o = rng.randrange(n)
            data = data[:o] + data[a:b] + data[o:]
            what.append(f"splice[{a}:{b}]@{o}")
        elif op == "json" and (safetensors or json_doc):
            try:
                if safetensors:
                    header, body = H.st_split(data)
                    if rng.random() < 0.5 and "__metadata__" in header and "config" in header["__metadata__"]:
                        cfg = json.loads(header["__metadata__"]["config"])
                        header["__metadata__"]["config"] = json.dumps(_mutate_json_values(cfg, rng))
                        what.append("config-value")
                    else:
                        header = _mutate_json_values(header, rng)
                        what.append("header-value")
                    data = H.st_join(header, body)
                else:
                    data = json.dumps(_mutate_json_values(json.loads(data), rng)).encode()
                    what.append("json-value")
            except (ValueError, struct.error, RecursionError, KeyError, TypeError):
                what.append("json-skipped")
    return data, "+".join(what)


def run_random(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vitkit-fuzz-"))
    pristine = H.make_pristine(work / "pristine")
    rng = random.Random(args.seed)
    findings: list[dict[str, Any]] = []
    done, t0, slowest, slowest_id = 0, time.time(), 0.0, ""
    try:
        while done < args.cases and time.time() - t0 < args.seconds:
            batch_dir = work / f"batch{done}"
            batch_dir.mkdir()
            cases = []
            for i in range(min(args.batch, args.cases - done)):
                target = rng.choice(sorted(TARGETS))
                fmt, inner = _fmt(target), TARGETS[target]
                dst = H.copy_target(fmt, pristine, batch_dir / f"c{i}{pristine[fmt].suffix}")
                f = dst / inner if inner else dst
                data, what = mutate(f.read_bytes(), rng, f.suffix == ".safetensors", f.suffix == ".json")
                f.write_bytes(data)
                cases.append({"id": f"{done + i}:{target}:{what}", "format": fmt, "path": str(dst), "name": str(dst),
                              "target": target})
            results = H.run_cases(cases, pristine, batch_dir, timeout=max(600.0, 2.0 * len(cases)))
            for c in cases:
                r = results[c["id"]]
                if r.get("seconds", 0.0) > slowest:
                    slowest, slowest_id = r["seconds"], c["id"]
                bad = r["outcome"] in ("crash", "timeout", "killed") or \
                    (r["outcome"] == "error" and not r["named"]) or \
                    (r["outcome"] == "differs" and (c["format"] in CHECKSUMMED or c["target"] == "hf_config"
                                                    and "config differs" not in r["detail"]))
                if bad:
                    keep = out / f"finding{len(findings):03d}{Path(c['path']).suffix}"
                    (shutil.copytree if Path(c["path"]).is_dir() else shutil.copyfile)(c["path"], keep)
                    findings.append({**c, "kept": str(keep), **r})
                    print(f"FINDING {c['id']}: {r['outcome']}: {r.get('detail', '')[:300]}", flush=True)
            done += len(cases)
            shutil.rmtree(batch_dir)
            print(f"{done} cases, {len(findings)} findings, {time.time() - t0:.0f} s, slowest case {slowest:.3f} s "
                  f"({slowest_id})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "findings.json").write_text(json.dumps(findings, indent=1))
    print(json.dumps({"engine": "random", "seed": args.seed, "cases": done, "findings": len(findings),
                      "seconds": round(time.time() - t0), "slowest_case_s": slowest, "slowest_case": slowest_id}))
    return 1 if findings else 0


# -- atheris engine -----------------------------------------------------------------------------
def run_atheris(args: argparse.Namespace) -> int:
    import resource

    import atheris

    with atheris.instrument_imports(include=["vitkit"]):
        import vitkit
        from vitkit.checkpoints import CheckpointError
    import torch

    torch.set_num_threads(1)
    target = args.format
    fmt, inner = _fmt(target), TARGETS[target]
    work = Path(tempfile.mkdtemp(prefix="vitkit-atheris-"))
    pristine = H.make_pristine(work / "pristine")
    ref = vitkit.load_model(pristine[fmt])
    case = H.copy_target(fmt, pristine, work / f"case{pristine[fmt].suffix}")
    f = case / inner if inner else case
    corpus = Path(args.out) / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "pristine").write_bytes(f.read_bytes())

    def one_input(data: bytes) -> None:
        f.write_bytes(data)
        try:
            model = vitkit.load_model(case)
        except CheckpointError as e:
            if str(case) not in str(e):
                raise AssertionError(f"error does not name the file: {e}") from None
            return
        ok, why = H._equal(model, ref)
        if not ok and (fmt in CHECKSUMMED or (target == "hf_config" and "config differs" not in why)):
            raise AssertionError(f"corrupt {target} loaded as a different model: {why}")

    resource.setrlimit(resource.RLIMIT_AS, (H.MEMORY_LIMIT, H.MEMORY_LIMIT))
    argv = [sys.argv[0], str(corpus), f"-max_total_time={int(args.seconds)}", "-timeout=10", "-rss_limit_mb=2048",
            f"-artifact_prefix={Path(args.out).resolve()}/{target}-", f"-seed={args.seed}",
            f"-max_len={2 * len(f.read_bytes()) + 1024}"]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=("atheris", "random"), default="random")
    ap.add_argument("--format", choices=sorted(TARGETS), default="vitkit", help="atheris: what to fuzz")
    ap.add_argument("--cases", type=int, default=5000, help="random: number of mutated files")
    ap.add_argument("--batch", type=int, default=500, help="random: cases per worker process")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="fuzz-out")
    args = ap.parse_args()
    return run_atheris(args) if args.engine == "atheris" else run_random(args)


if __name__ == "__main__":
    sys.exit(main())
