"""The ``medseg`` registry: every verb in ``--help``, cheap imports, module layering, the api facade."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import napari_medseg.cli as cli_pkg
from napari_medseg.cli import main
from napari_medseg.cli.main import COMMANDS

VERBS = ["segment", "models", "evaluate", "train", "detect", "lesions", "classify", "batch", "export", "import", "demo"]
#: verb -> its module, where the verb is a Python keyword
MODULES = {"import": "importing"}
CLI_DIR = Path(cli_pkg.__file__).parent


def test_registry_lists_every_verb_once_in_help_order():
    assert list(COMMANDS) == VERBS
    assert all(cmd.name == name for name, cmd in COMMANDS.items())


def test_help_lists_every_registered_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, cmd in COMMANDS.items():
        assert name in out and cmd.help.split()[0] in out, name
    exe = subprocess.run([sys.executable, "-m", "napari_medseg.cli", "--help"], capture_output=True, text=True,
                         check=False)
    assert exe.returncode == 0, exe.stderr
    listed = exe.stdout.split("positional arguments:")[1]
    for name in COMMANDS:
        assert f"\n    {name} " in listed, name


@pytest.mark.parametrize("name", VERBS)
def test_each_verb_has_help_and_a_standalone_parser(name, capsys):
    assert main([name, "--help"]) == 0
    assert COMMANDS[name].help.split()[0] in capsys.readouterr().out
    parser = argparse.ArgumentParser(prog="x")
    module = __import__(f"napari_medseg.cli.{MODULES.get(name, name)}", fromlist=["add_parser"])
    sub = parser.add_subparsers(dest="command")
    assert module.add_parser(sub).prog.endswith(name)
    assert module.COMMAND is COMMANDS[name] and COMMANDS[name].run is module.run


@pytest.mark.parametrize("module", ["napari_medseg.cli", "napari_medseg.api"])
def test_import_stays_torch_and_napari_free(module):
    code = (f"import {module}, sys\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'napari', 'qtpy'))\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def _imports(path: Path) -> list[ast.ImportFrom]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ImportFrom)]


@pytest.mark.parametrize("name", ["common", *VERBS])
def test_verb_modules_do_not_import_main_or_private_cli_names(name):
    for node in _imports(CLI_DIR / f"{MODULES.get(name, name)}.py"):
        inside_cli = node.level == 1 or (node.module or "").startswith("napari_medseg.cli")
        if not inside_cli:
            continue
        assert node.module not in ("main", "napari_medseg.cli.main"), f"{name}.py imports cli.main"
        assert not any(a.name == "main" for a in node.names), f"{name}.py imports cli.main"
        private = [a.name for a in node.names if a.name.startswith("_")]
        assert not private, f"{name}.py imports private {private} from cli.{node.module}"


def test_public_verbs_resolve_to_the_api_module():
    import napari_medseg
    import napari_medseg.api as api

    for name in ["read", "segment", "detect", "measure", "classify", "train", "evaluate", "list_models",
                 "load_model", "write_labels", "write_labels_tiff", "write_objects_csv"]:
        assert napari_medseg._LAZY[name] == "napari_medseg.api", name
        assert callable(getattr(api, name)) and getattr(api, name).__doc__, name
    assert api.write_labels_tiff is api.write_labels
