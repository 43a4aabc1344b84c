"""Small helpers shared by Aya's notebooks: find the repository, the datasets and
the `aya` binary, run it, and keep every file a notebook writes under `out/`.

The notebooks only *look* at what Aya computes: every number they show comes from
the `aya` binary (its CSV/JSON outputs) or from the raw datasets. Nothing here
computes forecasts or simulations itself.

Environment:
- AYA_BIN       path of the `aya` binary (default: target/release/aya or
                target/debug/aya, whichever was built most recently)
- AYA_DATASETS  the shared datasets directory (default: ../shared/datasets
                relative to the repository root)
- AYA_NB_OUT    where notebooks write their working files (default: out/notebooks)
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path


def repo_root() -> Path:
    """The workspace root: the first ancestor of this file holding Cargo.toml."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "Cargo.toml").is_file():
            return candidate
    raise FileNotFoundError(f"no Cargo.toml above {here}: is this the Aya repository?")


ROOT = repo_root()


def datasets_dir() -> Path:
    """The shared datasets directory ($AYA_DATASETS or ../shared/datasets)."""
    env = os.environ.get("AYA_DATASETS")
    path = Path(env) if env else (ROOT / ".." / "shared" / "datasets")
    path = path.resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"datasets directory {path} does not exist; set AYA_DATASETS to the folder "
            "holding nab/, worldcup98/ and azure_llm_inference_2023/"
        )
    return path


def aya_bin() -> Path:
    """The `aya` binary ($AYA_BIN, else the most recently built of target/{release,debug}/aya)."""
    env = os.environ.get("AYA_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"AYA_BIN={env} does not exist")
        return path.resolve()
    built = [p for p in (ROOT / "target/release/aya", ROOT / "target/debug/aya") if p.is_file()]
    if not built:
        raise FileNotFoundError(
            "no aya binary: run `cargo build -p aya-cli` (or set AYA_BIN)"
        )
    return max(built, key=lambda p: p.stat().st_mtime)


def out_dir(name: str) -> Path:
    """A fresh-or-existing working directory for one notebook under out/notebooks/."""
    base = Path(os.environ.get("AYA_NB_OUT", ROOT / "out" / "notebooks"))
    path = (base / name).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


class AyaError(RuntimeError):
    """`aya` exited non-zero; the message carries the command, exit code and stderr."""


def aya(*args: object, timeout: float = 600.0, quiet: bool = False) -> str:
    """Run `aya ARGS...` from the repository root and return its stdout.

    Raises AyaError (with the exit code and stderr) when it fails, so a notebook
    cell fails loudly instead of plotting stale files.
    """
    cmd = [str(aya_bin()), *(str(a) for a in args)]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    took = time.monotonic() - started
    shown = " ".join(shlex.quote(c) for c in ["aya", *cmd[1:]])
    if proc.returncode != 0:
        raise AyaError(
            f"`{shown}` exited with {proc.returncode} after {took:.1f} s\n"
            f"--- stderr ---\n{proc.stderr.strip()}\n--- stdout ---\n{proc.stdout.strip()[-2000:]}"
        )
    if not quiet:
        print(f"$ {shown}   ({took:.1f} s)")
    return proc.stdout


def aya_json(*args: object, timeout: float = 600.0) -> object:
    """Run `aya ARGS...` and parse its stdout as JSON."""
    out = aya(*args, timeout=timeout)
    try:
        return json.loads(out)
    except json.JSONDecodeError as e:
        raise AyaError(f"aya {' '.join(map(str, args))} did not print JSON: {e}\n{out[:500]}") from e


def records(value: object, required: tuple[str, ...]) -> list[dict]:
    """Find the list of flat records in a JSON document whose items all carry `required` keys.

    Aya's JSON outputs nest their tables (e.g. {"series": ..., "results": [...]});
    this walks the document and returns the first list of objects that has every
    required key, so the notebooks do not depend on the wrapper's exact shape.
    """
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            if item and all(isinstance(r, dict) and all(k in r for k in required) for r in item):
                return item
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    raise KeyError(f"no list of records with keys {required} in the JSON document")
