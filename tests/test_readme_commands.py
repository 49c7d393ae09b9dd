"""The README's commands work on a fresh machine, and the README, ``.ci/run`` and ``medseg demo`` agree.

- The apt line the README prints (twice: "Run it" and "Test it") is exactly
  ``.ci/apt-packages.txt``, which ``.ci/run`` installs, and the list
  ``medseg demo`` names when Qt cannot start.
- ``.ci/run`` runs the README's test command verbatim.
- Without a display, ``medseg demo`` prints what to do and exits 2; it never
  aborts (Qt's xcb plugin kills the process with signal 6 otherwise).
- The README's headless run command (``xvfb-run -a medseg demo --run
  --screenshot demo.png``) segments the sample and writes the screenshot
  (under the display the test suite runs on).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
CI_RUN = (REPO / ".ci" / "run").read_text(encoding="utf-8")
APT_FILE = REPO / ".ci" / "apt-packages.txt"
APT_LINE = re.compile(r"^(?:sudo )?apt-get install -y (?P<packages>[a-z0-9.+\- ]+)$")


def _apt_file_packages() -> list[str]:
    lines = (ln.strip() for ln in APT_FILE.read_text(encoding="utf-8").splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _readme_shell_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [ln.strip() for block in blocks for ln in block.splitlines() if ln.strip()]


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 3)
    return README[start:end if end > 0 else None]


def test_readme_apt_line_is_the_ci_list() -> None:
    packages = _apt_file_packages()
    assert len(packages) == len(set(packages)) >= 13
    apt_lines = [m for ln in _readme_shell_lines() if (m := APT_LINE.match(ln))]
    assert len(apt_lines) >= 2, "the README prints the apt line in 'Run it' and 'Test it'"
    for m in apt_lines:
        assert m["packages"].split() == packages
    for title in ("Run it", "Test it"):
        assert "apt-get install -y " + " ".join(packages) in _section(title), title


def test_ci_run_installs_exactly_the_apt_file() -> None:
    """Run the lines of .ci/run that build its package list, in bash, and compare."""
    (mapfile,) = [ln for ln in CI_RUN.splitlines() if ln.startswith("mapfile -t APT_PACKAGES")]
    assert 'apt-get install -y -qq "${APT_PACKAGES[@]}"' in CI_RUN
    out = subprocess.run(["bash", "-c", f'{mapfile}\nprintf "%s\\n" "${{APT_PACKAGES[@]}}"'],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split() == _apt_file_packages()
    # no second list hiding in the script: its only apt-get install takes the array
    installs = [ln for ln in CI_RUN.splitlines() if "apt-get install" in ln]
    assert installs == ['  $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null']


def test_ci_run_runs_the_readme_test_command_verbatim() -> None:
    (command,) = [ln for ln in _readme_shell_lines() if '".[testing]"' in ln]
    assert "xvfb-run -a python -m pytest" in command
    assert command in CI_RUN.splitlines()


def test_demo_names_the_same_packages() -> None:
    from napari_medseg.cli.demo import APT_PACKAGES

    assert list(APT_PACKAGES) == _apt_file_packages()


def test_readme_run_commands() -> None:
    lines = _readme_shell_lines()
    assert 'pip install torch==2.13.0 -e ".[all]" && medseg demo --run' in lines
    headless = 'pip install torch==2.13.0 -e ".[all]" && xvfb-run -a medseg demo --run --screenshot demo.png'
    assert headless in lines


def _headless_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux/X11")
def test_demo_without_display_says_what_to_do_and_exits_2() -> None:
    probe = (
        "import sys\n"
        "from napari_medseg.cli import main\n"
        "rc = main(['demo', '--run'])\n"
        "assert 'napari' not in sys.modules and 'qtpy' not in sys.modules, 'started napari without a display'\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=_headless_env(), capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    err = out.stderr
    assert "no display: neither DISPLAY nor WAYLAND_DISPLAY is set" in err
    assert "xvfb-run -a medseg demo --run --screenshot demo.png" in err
    assert "sudo apt-get install -y " + " ".join(_apt_file_packages()) in err
    assert "medseg segment IMAGE.tif -o out/" in err
    assert "Traceback" not in err and "Aborted" not in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux/X11")
def test_demo_with_unreachable_display_does_not_abort() -> None:
    pytest.importorskip("qtpy")
    display = next(f":{n}" for n in range(4242, 4342) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    out = subprocess.run([sys.executable, "-m", "napari_medseg.cli", "demo"], env=_headless_env(DISPLAY=display),
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert f"opening a window on DISPLAY='{display}'" in out.stderr
    assert "xvfb-run -a medseg demo" in out.stderr


def test_display_problem_rules() -> None:
    from napari_medseg.cli.demo import display_problem

    assert display_problem({}, "linux", probe=False).startswith("no display")
    assert display_problem({"DISPLAY": ":0"}, "linux", probe=False) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux", probe=False) is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None  # no window wanted
    assert display_problem({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"}, "linux", probe=False) is not None
    assert display_problem({}, "darwin") is None and display_problem({}, "win32") is None


@pytest.mark.slow
@pytest.mark.napari
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (the suite runs under xvfb-run)")
def test_readme_headless_demo_command_segments_and_writes_the_screenshot(tmp_path: Path) -> None:
    """`xvfb-run -a medseg demo --run --screenshot demo.png`, on the display this suite runs under."""
    pytest.importorskip("napari")
    (headless,) = [ln for ln in _readme_shell_lines() if "xvfb-run -a medseg demo" in ln]
    demo_args = shlex.split(headless.split("xvfb-run -a medseg ", 1)[1])
    assert demo_args[:2] == ["demo", "--run"]
    shot = tmp_path / "demo.png"
    demo_args[demo_args.index("demo.png")] = str(shot)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "napari_medseg.cli", *demo_args], env=env, capture_output=True,
                         text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert f"wrote {shot}" in out.stdout
    import imageio.v3 as iio

    image = iio.imread(shot)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 10
