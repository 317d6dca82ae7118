"""docker/systemd: the daemons' units are valid for systemd (`systemd-analyze verify`,
with ExecStart pointed at this build's binaries, since /usr/local/bin is where an
installation puts them), and a unit with a mistake is refused, so that the pass means
something. Running them needs systemd as init, which this project's machines lack."""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "docker" / "systemd").glob("*.service"))


def verify(tmp_path, name, text):
    unit = tmp_path / name
    unit.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True)


def built(text):
    build = pathlib.Path(os.environ.get("CODEQ_BUILD_DIR", ROOT / "build")).resolve()
    return text.replace("/usr/local/bin/", f"{build}/bin/")


def test_the_tool_is_there():
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: run scripts/setup"


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_verify(tmp_path, unit):
    assert len(UNITS) == 2
    result = verify(tmp_path, unit.name, built(unit.read_text()))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_broken_unit_is_refused(tmp_path):
    text = built(UNITS[0].read_text()).replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE")
    result = verify(tmp_path, UNITS[0].name, text)
    assert result.returncode != 0 or "SIGNOPE" in result.stderr, result
