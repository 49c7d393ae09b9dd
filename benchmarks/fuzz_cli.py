"""Fuzz the ``medseg`` command line: bad paths, bad numbers, bad models, interrupted runs.

Each case runs ``medseg ...`` in a fresh process (with its own temporary
folder and environment) and checks the exit status, that no Python traceback
reached the user, and what was written::

    clean error   exit 2 (argparse usage or a one-line "medseg VERB: error: ..." message), no traceback
    ok            exit 0 and the case's check of the outputs holds
    traceback     a Python traceback on stderr
    wrong         exit 0 with a failed check, or an unexpected exit status
    hang          no exit within the timeout

Run: ``python benchmarks/fuzz_cli.py [-k TEXT] [-v]``; it prints one line per
case and the table.  Each command runs under an 8 GB address-space limit.  Needs the shipped ``nuclei`` model and a dsb2018 image
from ``../shared/datasets`` (a synthetic image otherwise).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("MEDSEG_DATASETS", REPO.parent / "shared" / "datasets"))
#: The source tree the commands run from (``MEDSEG_FUZZ_SRC`` to fuzz another checkout, e.g. an older one).
SRC = Path(os.environ.get("MEDSEG_FUZZ_SRC", REPO / "src"))
CATEGORIES = ("clean error", "ok", "traceback", "wrong", "hang")


@dataclass
class CliCase:
    """One command line: ``setup(tmp) -> (argv, env)``, the expected exit and a check of the outputs."""

    name: str
    setup: Callable[[Path], tuple[list[str], dict[str, str]]]
    expect: int = 2
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None
    interrupt_after: float | None = None
    tags: set[str] = field(default_factory=set)


def _image(folder: Path, name: str, seed: int = 0, nan: bool = False) -> Path:
    import tifffile

    rng = np.random.default_rng(seed)
    src = sorted((DATASETS / "dsb2018" / "train" / "images").glob("*.tif"))
    img = None
    for f in src[:20]:
        a = tifffile.imread(f)
        if a.ndim == 2 and a.dtype == np.uint8:
            img = a[:96, :96]
            break
    if img is None:  # no datasets: blobs on a dark background
        yy, xx = np.mgrid[:96, :96]
        img = np.zeros((96, 96), np.uint8)
        for _ in range(12):
            cy, cx = rng.integers(8, 88, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = 200
    img = np.roll(img, seed * 11, axis=1)
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if nan:
        f = img.astype(np.float32)
        f[::3] = np.nan
        tifffile.imwrite(p, f)
    else:
        tifffile.imwrite(p, img)
    return p


def _labels(folder: Path, name: str) -> Path:
    import tifffile

    lab = np.zeros((96, 96), np.uint16)
    for i, (y, x) in enumerate([(20, 20), (50, 60), (70, 30), (30, 75)], 1):
        lab[y - 6:y + 6, x - 6:x + 6] = i
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(p, lab)
    return p


def _model_dir(tmp: Path, card_text: str | bytes | None = None, card_kind: str = "file",
               nan_weights: bool = False) -> Path:
    """A user model folder holding one (possibly broken) model ``bad`` next to a good model ``good``."""
    from napari_medseg.models.testing import make_random_model

    root = tmp / "user_models"
    make_random_model(root / "good", name="good")
    bad = root / "bad"
    if nan_weights:
        make_random_model(bad, name="bad")
        from safetensors.torch import load_file, save_file

        state = load_file(str(bad / "weights.safetensors"))
        for v in state.values():
            if v.is_floating_point():
                v.fill_(math.nan)
        save_file(state, str(bad / "weights.safetensors"))
        return root
    bad.mkdir(parents=True)
    (bad / "weights.safetensors").write_bytes((root / "good" / "weights.safetensors").read_bytes())
    card = bad / "model.json"
    if card_kind == "dir":
        card.mkdir()
    elif card_kind == "fifo":
        os.mkfifo(card)
    else:
        card.write_bytes(card_text if isinstance(card_text, bytes) else str(card_text).encode())
    return root


def _good_card(**changes) -> str:
    from napari_medseg.models.registry import shipped_models_dir

    d = json.loads((shipped_models_dir() / "nuclei" / "model.json").read_text())
    d["name"] = "bad"
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            if value is None:
                d[section].pop(sub, None)
            else:
                d[section][sub] = value
        else:
            d[section] = value
    return json.dumps(d)


def _run_check(expected: list[str]) -> Callable[[Path, subprocess.CompletedProcess], str | None]:
    def check(tmp: Path, proc: subprocess.CompletedProcess) -> str | None:
        missing = [e for e in expected if not (tmp / e).exists()]
        return f"missing outputs: {missing}" if missing else None
    return check


def _no_model(folder: str) -> Callable[[Path, subprocess.CompletedProcess], str | None]:
    def check(tmp: Path, proc: subprocess.CompletedProcess) -> str | None:
        return f"a model was written in {folder}" if (tmp / folder / "model.json").exists() else None
    return check


def build_cases() -> list[CliCase]:  # noqa: C901 - one flat list reads best
    cases: list[CliCase] = []

    def seg(name: str, extra: list[str], expect: int = 2, prep: Callable[[Path], None] | None = None,
            check=None, env: Callable[[Path], dict[str, str]] | None = None, inputs=None) -> None:
        def setup(tmp: Path) -> tuple[list[str], dict[str, str]]:
            img = _image(tmp, "in/a.tif")
            if prep is not None:
                prep(tmp)
            args = ["segment", *(inputs(tmp) if inputs else [str(img)]), "--device", "cpu", "-q", *extra]
            return [a.replace("{tmp}", str(tmp)) for a in args], (env(tmp) if env else {})
        cases.append(CliCase(f"segment/{name}", setup, expect, check))

    seg("ok", ["-o", "{tmp}/out"], 0, check=_run_check(["out/a_labels.tif"]))
    seg("output_is_a_file", ["-o", "{tmp}/file.txt"], prep=lambda t: (t / "file.txt").write_text("x"))
    seg("output_under_a_file", ["-o", "{tmp}/file.txt/sub"], prep=lambda t: (t / "file.txt").write_text("x"))
    seg("output_missing_parents", ["-o", "{tmp}/deep/er/out"], 0, check=_run_check(["deep/er/out/a_labels.tif"]))
    seg("output_unwritable_proc", ["-o", "/proc/medseg-out"])
    seg("output_empty", ["-o", ""])
    seg("output_blank", ["-o", "  "])
    seg("input_missing", ["-o", "{tmp}/out"], inputs=lambda t: [str(t / "nope.tif")])
    seg("input_second_missing", ["-o", "{tmp}/out"], inputs=lambda t: [str(t / "in" / "a.tif"), str(t / "nope.tif")],
        check=lambda t, p: "work done before the bad input was refused" if (t / "out").exists() else None)
    seg("input_fifo", ["-o", "{tmp}/out"], inputs=lambda t: [str((os.mkfifo(t / "p.tif"), t / "p.tif")[1])])
    seg("input_empty_folder", ["-o", "{tmp}/out"], inputs=lambda t: [str((t / "empty").mkdir() or t / "empty")])
    seg("input_text_as_tif", ["-o", "{tmp}/out"],
        inputs=lambda t: [str((t / "x.tif").write_text("not an image") and t / "x.tif")])
    seg("same_stem_twice", ["-o", "{tmp}/out"], 0,
        inputs=lambda t: [str(_image(t, "a/same.tif", 1)), str(_image(t, "b/same.tif", 2))],
        check=_run_check(["out/same_labels.tif", "out/same_2_labels.tif"]))
    seg("unknown_model", ["-o", "{tmp}/out", "--model", "no-such-model"])
    seg("tile_size_0", ["-o", "{tmp}/out", "--tile-size", "0"])
    seg("batch_size_neg", ["-o", "{tmp}/out", "--batch-size", "-3"])
    seg("channel_on_grey", ["-o", "{tmp}/out", "--channel", "5"])
    seg("models_dir_nosuchuser", ["-o", "{tmp}/out", "--model", "nuclei"], 0,
        env=lambda t: {"MEDSEG_MODELS_DIR": "~nosuchuser/models"}, check=_run_check(["out/a_labels.tif"]))

    bad_cards: dict[str, tuple[str | bytes | None, str]] = {
        "card_list": ("[1, 2, 3]", "file"), "card_string": ('"model"', "file"), "card_null": ("null", "file"),
        "card_non_utf8": (b"\xff\xfe{\x00", "file"), "card_deep": ("[" * 200000 + "]" * 200000, "file"),
        "card_is_dir": (None, "dir"), "card_is_fifo": (None, "fifo"),
        "card_wrong_types": (_good_card(architecture__depth="four"), "file"),
        "card_no_output_kind": (_good_card(output__kind=None), "file"),
        "card_base_1e9": (_good_card(architecture__base_channels=1e9), "file"),
        "card_depth_64": (_good_card(architecture__depth=64), "file"),
        "card_name_newline": (_good_card(name="evil\n"), "file"),
        "card_channels_mismatch": (_good_card(input__channels=3), "file"),
        "card_not_json": ("{not json", "file"),
    }
    for label, (text, kind) in bad_cards.items():
        def env(t: Path, text=text, kind=kind) -> dict[str, str]:
            return {"MEDSEG_MODELS_DIR": str(_model_dir(t, text, kind))}

        def check_listing(t: Path, p: subprocess.CompletedProcess) -> str | None:
            out = p.stdout
            if "nuclei" not in out or "good" not in out:
                return "the good models are not listed"
            if "bad" not in out or "broken" not in out:
                return "the broken model is not listed as broken"
            return None
        cases.append(CliCase(f"models/{label}", lambda t, env=env: (["models"], env(t)), 0, check_listing,
                             tags={"model"}))
        seg(f"{label}/use_nuclei", ["-o", "{tmp}/out", "--model", "nuclei"], 0, env=env,
            check=_run_check(["out/a_labels.tif"]))
        seg(f"{label}/use_bad", ["-o", "{tmp}/out", "--model", "bad"], env=env)
    nan_env = lambda t: {"MEDSEG_MODELS_DIR": str(_model_dir(t, nan_weights=True))}  # noqa: E731
    seg("nan_weights/use_bad", ["-o", "{tmp}/out", "--model", "bad"], env=nan_env,
        check=lambda t, p: "labels written from NaN weights" if (t / "out" / "a_labels.tif").exists() else None)

    def train(name: str, extra: list[str], expect: int = 2, check=None, nan: bool = False,
              interrupt: float | None = None, env=None) -> None:
        def setup(tmp: Path) -> tuple[list[str], dict[str, str]]:
            img = _image(tmp, "t/img.tif", nan=nan)
            lab = _labels(tmp, "t/lab.tif")
            e = {"MEDSEG_MODELS_DIR": str(tmp / "user_models")}
            if env:
                e.update(env(tmp))
            args = ["train", "--images", str(img), "--labels", str(lab), "--device", "cpu", "-q", *extra]
            return [a.replace("{tmp}", str(tmp)) for a in args], e
        cases.append(CliCase(f"train/{name}", setup, expect, check, interrupt))

    shipped = SRC / "napari_medseg" / "models" / "shipped"  # of the checkout under test
    def snapshot() -> dict[str, tuple]:
        return {q.name: tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(q.iterdir()))
                for q in shipped.iterdir() if q.is_dir()}
    before = snapshot()

    def shipped_untouched(t: Path, p: subprocess.CompletedProcess) -> str | None:
        import shutil

        now = snapshot()
        new = set(now) - set(before)
        for name in new:  # never leave a fuzz model among the shipped ones
            shutil.rmtree(shipped / name, ignore_errors=True)
        changed = sorted(n for n in before if now.get(n) != before[n])
        return f"written into the shipped models: {sorted(new) + changed}" if new or changed else None

    train("lr_inf", ["--lr", "inf", "--out", "{tmp}/m", "--epochs", "1"], check=_no_model("m"))
    train("lr_nan", ["--lr", "nan", "--out", "{tmp}/m", "--epochs", "1"], check=_no_model("m"))
    train("lr_1e6", ["--lr", "1e6", "--out", "{tmp}/m", "--epochs", "1"], check=_no_model("m"))
    train("minutes_inf", ["--minutes", "inf", "--out", "{tmp}/m"], check=_no_model("m"))
    train("patch_100000", ["--patch-size", "100000", "--out", "{tmp}/m", "--epochs", "1"], check=_no_model("m"))
    train("batch_100000", ["--batch-size", "100000", "--out", "{tmp}/m", "--epochs", "1"], check=_no_model("m"))
    train("out_is_file", ["--out", "{tmp}/f.txt", "--epochs", "1"], env=lambda t: (t / "f.txt").write_text("x") and {})
    train("out_under_file", ["--out", "{tmp}/f.txt/m", "--epochs", "1"],
          env=lambda t: (t / "f.txt").write_text("x") and {})
    train("out_shipped_nuclei", ["--out", str(shipped / "nuclei"), "--overwrite", "--epochs", "1"],
          check=shipped_untouched)
    train("out_shipped_nuclei_other_name", ["--out", str(shipped / "nuclei"), "--name", "mine", "--overwrite",
                                            "--epochs", "1"], check=shipped_untouched)
    train("out_shipped_new_folder", ["--out", str(shipped / "mine"), "--epochs", "1"], check=shipped_untouched)

    def link_env(t: Path) -> dict[str, str]:
        (t / "link").symlink_to(shipped)
        return {}
    train("out_symlink_into_shipped", ["--out", "{tmp}/link/nuclei", "--name", "mine", "--overwrite", "--epochs", "1"],
          env=link_env, check=shipped_untouched)
    train("models_dir_is_shipped", ["--name", "newmodel", "--epochs", "1"],
          env=lambda t: {"MEDSEG_MODELS_DIR": str(shipped)}, check=shipped_untouched)
    train("name_newline", ["--name", "evil\n", "--epochs", "1"])
    train("name_300_chars", ["--name", "a" * 300, "--epochs", "1"])
    train("name_dotdot", ["--name", "../escape", "--epochs", "1"])
    train("classes_in_instance_mode", ["--classes", "a,b", "--out", "{tmp}/m", "--epochs", "1"])
    train("models_dir_nosuchuser", ["--epochs", "1"], env=lambda t: {"MEDSEG_MODELS_DIR": "~nosuchuser/models"})
    train("nan_image", ["--out", "{tmp}/m", "--epochs", "1"], nan=True, check=_no_model("m"))
    train("ok", ["--out", "{tmp}/m", "--epochs", "1"], 0, check=_run_check(["m/model.json"]))

    def cancelled(t: Path, p: subprocess.CompletedProcess) -> str | None:
        card = t / "m" / "model.json"
        if not card.exists():
            return "no model saved"
        tr = json.loads(card.read_text())["training"]
        return None if tr.get("cancelled") is True else \
            f"card says finished={tr.get('finished')} cancelled={tr.get('cancelled')}"
    train("interrupted", ["--out", "{tmp}/m", "--minutes", "5", "--epochs", "100000", "--no-early-stopping"], 130,
          check=cancelled, interrupt=10.0)

    def ev(name: str, extra: list[str], expect: int = 2, prep=None) -> None:
        def setup(tmp: Path) -> tuple[list[str], dict[str, str]]:
            _image(tmp, "ev/images/a.tif")
            _labels(tmp, "ev/masks/a.tif")
            if prep:
                prep(tmp)
            args = ["evaluate", "--images", str(tmp / "ev/images"), "--masks", str(tmp / "ev/masks"), "--device",
                    "cpu", "-q", *extra]
            return [a.replace("{tmp}", str(tmp)) for a in args], {}
        cases.append(CliCase(f"evaluate/{name}", setup, expect))

    ev("output_is_folder", ["-o", "{tmp}"])
    ev("output_under_file", ["-o", "{tmp}/f.txt/report.csv"], prep=lambda t: (t / "f.txt").write_text("x"))
    ev("output_empty", ["-o", ""])
    ev("images_missing", ["--images", "{tmp}/nope"])

    def det(name: str, extra: list[str], expect: int = 2, prep=None) -> None:
        def setup(tmp: Path) -> tuple[list[str], dict[str, str]]:
            img = _image(tmp, "in/a.tif")
            if prep:
                prep(tmp)
            return [a.replace("{tmp}", str(tmp)) for a in ["detect", str(img), "--device", "cpu", "-q", *extra]], {}
        cases.append(CliCase(f"detect/{name}", setup, expect))

    det("output_is_file", ["-o", "{tmp}/f.txt"], prep=lambda t: (t / "f.txt").write_text("x"))
    det("output_empty", ["-o", ""])
    det("output_unwritable_proc", ["-o", "/proc/medseg-out"])
    return cases


#: Address-space limit of each ``medseg`` process (torch alone maps about 3 GB): a command that tries to
#: allocate tens of GB (the issue's --patch-size 100000) fails with MemoryError instead of taking the machine.
MEM_LIMIT_BYTES = 8 * 2**30


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT_BYTES, MEM_LIMIT_BYTES))
    # a harness started in the background (nohup ... &) passes SIGINT ignored to its children, and Python
    # then never raises KeyboardInterrupt: give the command the default handler, as a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when_training(proc: subprocess.Popen, after: float, timeout: float) -> tuple[str, str]:
    """Send Ctrl-C (SIGINT) ``after`` seconds into training proper (once "device:" is printed), as a user would."""
    import threading

    lines: list[str] = []
    started = threading.Event()

    def read_err() -> None:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("device:"):
                started.set()

    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    if started.wait(timeout):
        time.sleep(after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait(timeout=timeout)
    reader.join(5)
    return out, "".join(lines)


def run_case(case: CliCase, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="fuzzcli-") as tmp:
        t = Path(tmp)
        try:
            argv, env_extra = case.setup(t)
        except Exception as exc:  # noqa: BLE001 - reported as not built
            return {"case": case.name, "category": "not built", "detail": f"{type(exc).__name__}: {exc}"}
        env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", **env_extra)
        code = "import sys; from napari_medseg.cli import main; sys.exit(main())"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=tmp, preexec_fn=_limit_memory)
        try:
            if case.interrupt_after is not None:
                out, err = _interrupt_when_training(proc, case.interrupt_after, timeout)
            else:
                out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack on stderr
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            where = [ln.strip() for ln in (err or "").splitlines() if ln.strip().startswith("File ")][:3]
            return {"case": case.name, "category": "hang", "detail": f"no exit after {timeout:.0f} s; {where}"}
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        secs = time.perf_counter() - t0
        last = (err.strip().splitlines() or [""])[-1][:220]
        if "Traceback (most recent call last)" in err:
            cat = "traceback"
        elif proc.returncode != case.expect:
            cat = "wrong"
            last = f"exit {proc.returncode}, expected {case.expect}: {last}"
        else:
            problem = case.check(t, done) if case.check else None
            if problem:
                cat, last = "wrong", problem
            else:
                cat = "ok" if case.expect in (0, 130) else "clean error"
        return {"case": case.name, "category": cat, "detail": last, "seconds": round(secs, 1),
                "exit": proc.returncode}


def table(results: list[dict]) -> str:
    groups: dict[str, Counter] = {}
    for r in results:
        groups.setdefault(r["case"].split("/")[0], Counter())[r["category"]] += 1
    total = Counter(r["category"] for r in results)
    cols = list(CATEGORIES) + sorted(set(total) - set(CATEGORIES))
    rows = [["verb", "runs", *cols]]
    for g in sorted(groups):
        rows.append([g, str(sum(groups[g].values())), *(str(groups[g].get(c, 0)) for c in cols)])
    rows.append(["total", str(len(results)), *(str(total.get(c, 0)) for c in cols)])
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.rjust(w[i]) if i else v.ljust(w[i]) for i, v in enumerate(r)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default=None, help="only cases whose name contains this text")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    cases = [c for c in build_cases() if not args.k or args.k in c.name]
    results = []
    for i, c in enumerate(cases, 1):
        r = run_case(c, args.timeout)
        results.append(r)
        if args.verbose:
            print(f"[{i}/{len(cases)}] {r['category']:<12} {c.name}  {r.get('detail', '')}", file=sys.stderr)
    print(table(results))
    bad = [r for r in results if r["category"] not in ("ok", "clean error")]
    for r in bad:
        print(f"{r['category']:<12} {r['case']}: {r.get('detail', '')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
