"""The simulated clouds (`python -m exporter.simulator`, one process per cloud, run through
`tests.bench._simulator` to silence its per-request log) and the exporter processes that poll
them.

Both simulators start once, with as many jobs as the largest figure needs: a poll of job 5 costs
the same whatever the job count, and starting them once saves a minute of a full run.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dashboards.ports import served_at
from exporter.accounts import HuaweiAccount
from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    demo_simulator,
)
from exporter.simulator.tencent_ci import (
    DEMO_TENCENT_BUCKET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    demo_tencent_simulator,
)
from tests.bench._harness import (
    Process,
    Processes,
    progress,
    start_listening,
    wait_for_port,
    wait_until_serving,
)

# Simulated seconds per real second: the demo's pace, so jobs of every script pass through
# their states (and Huawei's reach their assessments) during a run.
SPEED = 30.0
HUAWEI = "hw"
TENCENT = "tc"
# The exporter reads the simulators' published demo credentials from these.
CREDENTIALS = {
    "BENCH_HW_AK": DEMO_ACCESS_KEY,
    "BENCH_HW_SK": DEMO_SECRET_KEY,
    "BENCH_TC_ID": DEMO_TENCENT_SECRET_ID,
    "BENCH_TC_KEY": DEMO_TENCENT_SECRET_KEY,
}
PROJECT_ID = DEMO_PROJECT_ID


@dataclass
class Cloud:
    process: Process
    port: int
    job_ids: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Clouds:
    huawei: Cloud
    tencent: Cloud


def start_clouds(processes: Processes, huawei_jobs: int, tencent_jobs: int) -> Clouds:
    """Both simulators, serving; their job ids are the demo's deterministic ones."""

    def simulator(cloud: str, jobs: int) -> tuple[Process, int]:
        return start_listening(
            processes,
            f"{cloud} simulator",
            lambda port: [
                *("-m", "tests.bench._simulator", "--cloud", cloud, "--jobs", str(jobs)),
                *("--port", str(port), "--host", "127.0.0.1", "--speed", str(SPEED)),
            ],
            lambda process, port: wait_for_port(process, port, timeout=60),
        )

    huawei, huawei_port = simulator("huawei", huawei_jobs)
    tencent, tencent_port = simulator("tencent", tencent_jobs)
    # The same ids the simulators build: the first demo ids, then uuid5 ones by index.
    huawei_ids = demo_simulator(
        project_id=PROJECT_ID,
        access_key=DEMO_ACCESS_KEY,
        secret_key=DEMO_SECRET_KEY,
        jobs=huawei_jobs,
    ).job_ids()
    tencent_ids = demo_tencent_simulator(
        bucket=DEMO_TENCENT_BUCKET,
        secret_id=DEMO_TENCENT_SECRET_ID,
        secret_key=DEMO_TENCENT_SECRET_KEY,
        jobs=tencent_jobs,
    ).job_ids()
    progress(f"simulators up: {huawei_jobs} Huawei jobs, {tencent_jobs} Tencent jobs")
    return Clouds(Cloud(huawei, huawei_port, huawei_ids), Cloud(tencent, tencent_port, tencent_ids))


def exporter_config(
    clouds: Clouds,
    huawei_ids: Sequence[str],
    tencent_ids: Sequence[str],
    *,
    poll_interval: str,
    max_concurrency: int,
) -> str:
    """A config for both accounts, rate caps off (no `max_rps`, and no request budget where the
    exporter knows one: these figures are what a poll costs, not how a budget orders them),
    file watching off (a 50k-job reload in the middle of a measurement would be measured too);
    SIGHUP still reloads."""
    no_budget = "api_budget_rps: 0, " if "api_budget_rps" in HuaweiAccount.model_fields else ""
    lines = [
        f"poll_interval: {poll_interval}",
        f"terminal_poll_interval: {poll_interval}",
        "request_timeout: 30s",
        f"max_concurrency: {max_concurrency}",
        f"max_jobs: {max(50_000, len(huawei_ids) + len(tencent_ids))}",
        "reload_check_interval: 0",
        "accounts:",
        f"  {HUAWEI}: {{provider: huawei_metastudio, region: cn-north-4, {no_budget}"
        f"project_id: {PROJECT_ID}, endpoint: '{clouds.huawei.url}', "
        "auth: {ak_env: BENCH_HW_AK, sk_env: BENCH_HW_SK}}",
        f"  {TENCENT}: {{provider: tencent_ci, bucket: {DEMO_TENCENT_BUCKET}, region: ap-beijing, "
        f"endpoint: '{clouds.tencent.url}', job_api: media_jobs, batch_size: 10, "
        "auth: {secret_id_env: BENCH_TC_ID, secret_key_env: BENCH_TC_KEY}}",
    ]
    if huawei_ids or tencent_ids:
        lines.append("jobs:")
        lines += [f"  - {{account: {HUAWEI}, id: {job_id}}}" for job_id in huawei_ids]
        lines += [f"  - {{account: {TENCENT}, id: {job_id}}}" for job_id in tencent_ids]
    return "\n".join(lines) + "\n"


@dataclass
class Exporter:
    process: Process
    port: int
    config: Path

    def reload(self, config_text: str) -> None:
        """Rewrite the config and reload it as an operator would (SIGHUP)."""
        self.config.write_text(config_text)
        self.process.popen.send_signal(signal.SIGHUP)


def start_exporter(processes: Processes, name: str, config: Path, config_text: str) -> Exporter:
    """`python -m exporter` on a loopback port it picks and reports, answering /healthz."""
    config.write_text(config_text)
    process = processes.start(
        name,
        [
            *("-m", "exporter", "--config", str(config), "--listen", "127.0.0.1:0"),
            *("--log-level", "error"),
        ],
        CREDENTIALS,
        pipe_stdout=True,
    )
    line = process.read_line(timeout=120)  # printed once it listens
    serving = served_at(line)
    if serving is None:
        raise process.failure(f"printed {line!r}, not the address it serves on")
    port = serving[1]
    wait_until_serving(process, port, "/healthz", timeout=120)
    return Exporter(process, port, config)
