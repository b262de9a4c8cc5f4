"""Property tests: whatever a cloud or a user sends, parsers give a value or a clean error."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import ConfigError, load_settings
from exporter.model import JobSnapshot, ResponseParseError
from exporter.providers.huawei_metastudio import parse_short_job
from exporter.providers.tencent_ci import parse_response


def nested(
    leaves: st.SearchStrategy[Any], *, width: int, key_size: int, max_leaves: int
) -> st.SearchStrategy[Any]:
    """`leaves`, and lists and string-keyed dicts of them, nested: any JSON or YAML value."""
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=width)
            | st.dictionaries(st.text(max_size=key_size), children, max_size=width)
        ),
        max_leaves=max_leaves,
    )


json_values = nested(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    width=4,
    key_size=10,
    max_leaves=20,
)
# Bodies shaped like ShowShortJob answers, with any value anywhere.
huawei_fields = st.fixed_dictionaries(
    {},
    optional={
        "job_id": json_values,
        "job_type": json_values,
        "state": st.sampled_from(["SUCCEED", "AUDIT_FAILED", "X"]) | json_values,
        "job_failed_code": json_values,
        "job_failed_reason": json_values,
        "create_time": st.integers() | st.floats() | json_values,
        "lastupdate_time": st.integers() | st.floats() | json_values,
        "assess_result": st.dictionaries(
            st.sampled_from(["speed", "snr", "sound", "reverb", "dnsmos_ovrl", "suggestion"]),
            st.fixed_dictionaries(
                {},
                optional={
                    "expected": json_values,
                    "actual": json_values,
                    "status": json_values,
                    "suggestion": json_values,
                },
            )
            | json_values,
        )
        | json_values,
    },
)


def _check_snapshot(result: JobSnapshot) -> None:
    assert isinstance(result.state, str)
    assert result.state
    for item in result.assessments:
        assert item.actual_value is None or isinstance(item.actual_value, float)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_huawei_parser_takes_any_bytes(body: bytes) -> None:
    with contextlib.suppress(ResponseParseError):
        _check_snapshot(parse_short_job(body, "job"))


@settings(max_examples=600, deadline=None)
@given(huawei_fields)
def test_huawei_parser_takes_any_json_shaped_like_an_answer(document: dict[str, Any]) -> None:
    try:
        body = orjson.dumps(document)
    except TypeError:  # integers beyond 64 bits: not JSON anyone sends
        return
    with contextlib.suppress(ResponseParseError):
        _check_snapshot(parse_short_job(body, "job"))


xml_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=15
)
xml_names = st.sampled_from(
    [
        "JobId",
        "State",
        "Code",
        "Message",
        "CreationTime",
        "StartTime",
        "EndTime",
        "QueueId",
        "Tag",
        "Progress",
        "SubTag",
        "Other",
    ]
)


@st.composite
def xml_answers(draw: st.DrawFn) -> bytes:
    from xml.sax.saxutils import escape

    details = []
    for _ in range(draw(st.integers(0, 3))):
        fields = draw(st.dictionaries(xml_names, xml_text, max_size=8))
        inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
        details.append(f"<JobsDetail>{inner}</JobsDetail>")
    missing = "".join(
        f"<NonExistJobIds>{escape(v)}</NonExistJobIds>"
        for v in draw(st.lists(xml_text, max_size=2))
    )
    token = draw(st.sampled_from(["", "<NextToken>abc</NextToken>", "<NextToken/>"]))
    root = draw(st.sampled_from(["Response", "Response", "Error", "Other"]))
    return f"<{root}>{''.join(details)}{missing}{token}</{root}>".encode()


@settings(max_examples=500, deadline=None)
@given(xml_answers() | st.binary(max_size=200))
def test_tencent_parser_takes_any_xml_or_bytes(body: bytes) -> None:
    try:
        jobs, missing, token = parse_response(body)
    except ResponseParseError:
        return
    for job in jobs:
        _check_snapshot(job)
    assert all(isinstance(job_id, str) for job_id in missing)
    assert token is None or isinstance(token, str)


def _problems(path: Path) -> list[str]:
    """The loader's problems, or [] if it accepted the file: never anything else."""
    try:
        load_settings(path)
    except ConfigError as exc:
        problems = exc.problems
    else:
        return []
    assert problems  # an error always says what is wrong
    return problems


config_values = nested(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=12),
    width=3,
    key_size=8,
    max_leaves=15,
)
config_documents = st.fixed_dictionaries(
    {},
    optional={
        "listen": config_values,
        "poll_interval": config_values,
        "accounts": st.dictionaries(
            st.text(max_size=6),
            st.fixed_dictionaries(
                {"provider": st.sampled_from(["huawei_metastudio", "tencent_ci", "x"])},
                optional={
                    "region": config_values,
                    "project_id": config_values,
                    "bucket": config_values,
                    "auth": config_values,
                    "discover": config_values,
                    "batch_size": config_values,
                },
            ),
            max_size=2,
        )
        | config_values,
        "jobs": st.lists(
            st.fixed_dictionaries(
                {},
                optional={"account": config_values, "id": config_values, "labels": config_values},
            ),
            max_size=3,
        )
        | config_values,
        "shard": config_values,
        "api": config_values,
        "max_jobs": config_values,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config_documents)
def test_the_config_loader_takes_any_document(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    problems = _problems(path)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_the_config_loader_takes_any_file_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    problems = _problems(path)
    assert all("\n" not in p for p in problems)
