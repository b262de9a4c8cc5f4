"""The image's recipe, tested without a Docker engine: what the Dockerfile does, done here.

The Dockerfile builds a wheel, installs it into a fresh virtualenv and runs the console script as
uid 10001. This test builds the same wheel, installs it into a fresh venv (no access to the
source tree) and runs `cloudjob-exporter --check-config` on the Helm chart's default config.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
CHART_VALUES = REPO / "helm" / "cloudjob-exporter" / "values.yaml"


def test_the_dockerfile_is_multi_stage_non_root_and_needs_no_shell() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(stages) == 2
    assert all("slim" in image for image in stages)
    assert "pip wheel" in text
    user = re.search(r"^USER (\d+):(\d+)$", text, flags=re.MULTILINE)
    assert user is not None
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert int(user.group(1)) == values["podSecurityContext"]["runAsUser"] != 0
    # Exec form: no /bin/sh -c between the runtime and the exporter.
    assert re.search(r'^ENTRYPOINT \["cloudjob-exporter"\]$', text, flags=re.MULTILINE)


def test_the_wheel_installs_into_a_fresh_venv_and_checks_the_charts_default_config(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--wheel-dir",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("cloudjob_exporter-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    result = subprocess.run(
        [str(pip), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load(CHART_VALUES.read_text())["config"]))
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDJOB_")}
    clean_env.pop("PYTHONPATH", None)

    def installed(program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a program of the fresh venv, outside the checkout and without its environment."""
        return subprocess.run(
            [str(env_dir / "bin" / program), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=clean_env,
            timeout=60,
            check=False,
        )

    check = installed("cloudjob-exporter", "--config", str(config), "--check-config")
    assert check.returncode == 0, check.stderr
    assert "ok (0 accounts, 0 jobs)" in check.stdout
    # The installed package is the wheel's, not this checkout's.
    where = installed("python", "-c", "import exporter; print(exporter.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout
    # The simulator and the dashboards are not needed at run time but ship for --demo.
    demo = installed("cloudjob-exporter", "--demo", "--check-config")
    assert demo.returncode == 0, demo.stderr
    # The status page's templates and static files ship in the wheel: it renders, installed.
    page = installed(
        "python",
        "-c",
        "from exporter.statuspage import Query, render_status, static_file\n"
        "from exporter.store import Store\n"
        "from importlib.resources import files\n"
        "html = render_status(Store().view(), Query(), now=1e9, started_at=1e9, shard='0/1',"
        " providers={}, polling={}, recent_poll_errors=lambda account, provider: 0)\n"
        "css = (files('exporter') / 'static' / 'status.css').read_text()\n"
        "js = (files('exporter') / 'static' / 'status.js').read_text()\n"
        "print('Needs attention' in html, 'svg.bar' in css, 'addEventListener' in js)",
    )
    assert page.returncode == 0, page.stderr
    assert page.stdout.split() == ["True", "True", "True"]
