"""conf/ ships inside the package: a wheel built from this checkout, installed into a bare folder, composes
configs from any working directory (no checkout, no MTA_LAB_CONF_DIR)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_ships_conf_and_composes_from_an_unrelated_folder(tmp_path):
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "mta_lab", src / "mta_lab", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "conf", src / "conf", ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w",
          str(tmp_path / "dist")], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("mta_lab-*.whl")
    shipped = {n.removeprefix("mta_lab/conf_data/") for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("mta_lab/conf_data/")}
    assert shipped == {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}

    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MTA_LAB_CONF_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    where = _run([sys.executable, "-c", "import mta_lab.conf as c; print(c.__file__); print(c.conf_dir())"],
                 cwd=elsewhere, env=env).split()
    assert where == [str(site / "mta_lab" / "conf.py"), str(site / "mta_lab" / "conf_data")]
    out = _run([sys.executable, "-m", "mta_lab.cli", "train", "--print-config", "attention=mta", "experiment=tiny"],
               cwd=elsewhere, env=env)
    config = yaml.safe_load(out)
    assert config["name"] == "tiny_mta" and config["attention_name"] == "mta"
    assert config["attention"]["kq_pre"] == [6, 11] and config["model"]["dim"] == 64
