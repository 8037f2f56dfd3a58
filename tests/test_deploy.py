"""deploy/ stays true to the server: images, compose, Prometheus rules, Grafana dashboard and Helm chart.

Fast and offline. Structure is checked here with PyYAML and jsonschema; the real tools (`helm`, `promtool`,
`docker compose`) also run when they are on PATH, and those tests skip with the reason when they are not.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from depscreen.streamer.metrics import Metrics
from depscreen.streamer.settings import ServerSettings, env_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
CHART = DEPLOY / "helm" / "depscreen"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "depscreen.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
COMPOSE = DEPLOY / "compose.yaml"

DEFAULTS = ServerSettings()
SETTING_VARIABLES = {env_name(f.name) for f in fields(ServerSettings)}

SECRET_WORDS = ("credential", "password", "secret")
"""A setting whose name holds one of these is a secret: the chart reads it from a Secret (secretEnv), never
from a plain value."""

PROMQL_LABELS = {"job", "instance", "le"}
"""Labels Prometheus itself adds (target labels) or that histogram buckets carry."""


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def exported_series() -> dict[str, set[str]]:
    """Every series name the server exports, with the labels it carries (beyond job, instance, le)."""
    metrics = Metrics()
    labels = {}
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase):
            labels[wrapper.describe()[0].name] = set(wrapper._labelnames)
    series = {}
    for family in metrics.registry.collect():
        suffixes = {
            "histogram": ("_bucket", "_sum", "_count"),
            "counter": ("_total",),
            "gauge": ("",),
            "info": ("_info",),
        }[family.type]
        sampled = {name for sample in family.samples for name in sample.labels} - PROMQL_LABELS
        for suffix in suffixes:
            series[family.name + suffix] = labels.get(family.name, set()) | sampled
    return series


def dashboard_panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def promql_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(depscreen_[a-z0-9_]+)\b", expr))


def promql_label_names(expr: str) -> set[str]:
    """Labels an expression selects on or groups by."""
    names = set()
    for selector in re.findall(r"\{([^}]*)\}", expr):
        names |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names |= {name.strip() for name in grouping.split(",") if name.strip()}
    return names


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# Images


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_images_are_multi_stage_non_root_with_a_health_check(name: str) -> None:
    instructions = dockerfile_instructions(DOCKER / name)
    assert sum(keyword == "FROM" for keyword, _ in instructions) >= 2
    runtime = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0]
    assert ("ENTRYPOINT", '["depscreen", "serve"]') in runtime
    exposed = {port for keyword, args in runtime if keyword == "EXPOSE" for port in args.split()}
    assert exposed == {str(DEFAULTS.grpc_port), str(DEFAULTS.http_port)}
    env = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "DEPSCREEN_HOST=0.0.0.0" in env
    assert set(re.findall(r"\b(DEPSCREEN_[A-Z_]+)=", env)) <= SETTING_VARIABLES


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_images_copy_only_paths_that_exist_in_the_build_context(name: str) -> None:
    for keyword, args in dockerfile_instructions(DOCKER / name):
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY {source} is not in the repository root"


def test_cpu_image_installs_the_pinned_torch_before_the_project() -> None:
    runs = [args for keyword, args in dockerfile_instructions(DOCKER / "Dockerfile") if keyword == "RUN"]
    installs = [i for i, args in enumerate(runs) if "pip install" in args]
    assert "torch==2.13.0" in runs[installs[0]], "the first pip install must be torch==2.13.0"
    assert any("pip install '.[server,otel]'" in runs[i] for i in installs[1:]), "image: [server,otel]"
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile, "the Makefile's torch pin moved: update the images"
    assert "'.[server,train,dev]'" in makefile, "make's venv needs the server, train and dev extras"


def test_cuda_image_runs_on_nvidia_cuda_with_the_gpu_extra() -> None:
    instructions = dockerfile_instructions(DOCKER / "Dockerfile.cuda")
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert all(base.startswith("nvidia/cuda:") for base in bases)
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "torch==2.13.0" in runs
    assert "'.[server,otel,gpu]'" in runs
    assert "mamba-ssm" in (ROOT / "pyproject.toml").read_text()


class _Healthz(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def healthz_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> int:
    env = {"DEPSCREEN_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, str(DOCKER / "healthcheck.py")]
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize(
    ("body", "healthy"),
    [
        (b'{"status": "ok", "model_id": "m", "device": "cpu", "sessions_active": 0}', True),
        (b'{"status": "starting"}', False),
        (b"not json", False),
    ],
)
def test_healthcheck_passes_only_on_status_ok(healthz_server: ThreadingHTTPServer, body: bytes, healthy: bool) -> None:
    _Healthz.body = body
    assert (run_healthcheck(healthz_server.server_address[1]) == 0) is healthy


def test_healthcheck_fails_when_nothing_listens(healthz_server: ThreadingHTTPServer) -> None:
    port = healthz_server.server_address[1]
    healthz_server.shutdown()
    healthz_server.server_close()
    assert run_healthcheck(port) == 1


# Compose


def test_compose_runs_the_server_redis_prometheus_and_grafana() -> None:
    services = load_yaml(COMPOSE)["services"]
    assert set(services) == {"server", "redis", "prometheus", "grafana"}
    server = services["server"]
    assert server["build"] == {"context": "..", "dockerfile": "deploy/docker/Dockerfile"}
    container_ports = {int(port.rsplit(":", 1)[1]) for port in server["ports"]}
    assert container_ports == {DEFAULTS.grpc_port, DEFAULTS.http_port}
    assert all(port.startswith("127.0.0.1:") for s in services.values() for port in s.get("ports", []))
    assert server["environment"]["DEPSCREEN_HOST"] == "0.0.0.0"
    assert int(server["environment"]["DEPSCREEN_GRPC_PORT"]) == DEFAULTS.grpc_port
    assert int(server["environment"]["DEPSCREEN_HTTP_PORT"]) == DEFAULTS.http_port
    assert set(server["environment"]) <= SETTING_VARIABLES
    assert server["read_only"] is True and any(t.startswith("/tmp") for t in server["tmpfs"])


def test_compose_mounts_files_that_exist() -> None:
    for name, service in load_yaml(COMPOSE)["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_the_server_http_port_and_loads_the_alerts() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "depscreen")
    assert job["static_configs"][0]["targets"] == [f"server:{DEFAULTS.http_port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    compose = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in compose["volumes"])
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "depscreen.yml")
    assert providers["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]


# Metric names in the dashboard, the alerts and the HPA


def test_every_metric_charted_or_alerted_on_is_exported_or_known_to_be_coming() -> None:
    exported = exported_series()
    for expr in dashboard_expressions() + [rule["expr"] for rule in alert_rules()]:
        for name in promql_metric_names(expr):
            assert name in exported, f"{name} is not exported by the server: {expr}"


def test_every_label_used_exists_on_the_metrics_of_its_expression() -> None:
    exported = exported_series()
    for expr in dashboard_expressions() + [rule["expr"] for rule in alert_rules()]:
        names = promql_metric_names(expr)
        allowed = PROMQL_LABELS.union(*(exported.get(name, set()) for name in names))
        assert promql_label_names(expr) <= allowed, expr


def test_dashboard_has_the_panels_operators_need() -> None:
    panels = dashboard_panels()
    charted = {name for expr in dashboard_expressions() for name in promql_metric_names(expr)}
    for name in (
        "depscreen_sentence_latency_seconds_bucket",
        "depscreen_sessions_active",
        "depscreen_sentences_total",
        "depscreen_stage_seconds_bucket",
        "depscreen_errors_total",
        "depscreen_audio_seconds_total",
    ):
        assert name in charted, name
    latency = " ".join(dashboard_expressions())
    for quantile in ("0.5", "0.95"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(depscreen_sentence_latency_seconds_bucket" in latency
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["description"] and panel["targets"], panel["title"]


def test_alerts_cover_latency_errors_session_limit_and_down() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) >= {
        "DepscreenDown",
        "DepscreenSentenceLatencyHigh",
        "DepscreenStreamErrorsHigh",
        "DepscreenSessionsNearLimit",
    }
    latency = rules["DepscreenSentenceLatencyHigh"]
    assert "histogram_quantile(0.95" in latency["expr"] and "> 0.5" in latency["expr"] and latency["for"] == "5m"
    near = re.sub(r"\s+", " ", rules["DepscreenSessionsNearLimit"]["expr"])
    ratio = r"\(depscreen_sessions_active\{[^}]*\}\) / max by \(job, instance\) \(depscreen_max_sessions\{"
    assert re.search(ratio, near), near
    assert near.strip().endswith(">= 0.8"), "the near-limit threshold is 80% of each replica's own max_sessions"
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_the_charts_alerts_are_the_prometheus_alerts() -> None:
    """The PrometheusRule template ships files/alerts.yml: it must be deploy/prometheus/alerts.yml, byte for byte."""
    assert (CHART / "files" / "alerts.yml").read_bytes() == ALERTS.read_bytes(), (
        "copy deploy/prometheus/alerts.yml to deploy/helm/depscreen/files/alerts.yml"
    )


def test_the_prometheus_rule_template_is_off_by_default_and_ships_the_alert_groups() -> None:
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert "{{- if .Values.prometheusRule.enabled }}" in template
    assert '.Files.Get "files/alerts.yml" | fromYaml' in template and "toYaml $alerts.groups" in template
    assert "kind: PrometheusRule" in template and "apiVersion: monitoring.coreos.com/v1" in template
    assert chart_values()["prometheusRule"] == {"enabled": False, "labels": {}}


def test_hpa_scales_on_an_exported_metric() -> None:
    hpa = (CHART / "templates" / "hpa.yaml").read_text()
    assert set(re.findall(r"name: (depscreen_[a-z_]+)", hpa)) == {"depscreen_sessions_active"}
    assert "depscreen_sessions_active" in exported_series()


# Helm chart


def chart_values() -> dict:
    return load_yaml(CHART / "values.yaml")


def chart_schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def test_chart_metadata_parses() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["name"] == "depscreen" and chart["type"] == "application"


def test_values_schema_is_valid_and_the_default_values_pass_it() -> None:
    schema = chart_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(chart_values())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("server", "device"), "tpu"),
        (("server", "videoFps"), 60),
        (("server", "grpcPort"), 0),
        (("probes", "kind"), "tcp"),
        (("podSecurityContext", "runAsNonRoot"), False),
        (("server", "maxBatch"), 0),
        (("server", "iceServers"), "http://turn.example"),
        (("server", "notASetting"), 1),
    ],
)
def test_values_schema_rejects_what_the_server_or_the_chart_would_not_take(
    path: tuple[str, ...], value: object
) -> None:
    values = copy.deepcopy(chart_values())
    values[path[0]][path[1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(chart_schema()).validate(values)


def merged(base: dict, over: dict) -> dict:
    """`over` laid on `base` as Helm merges a values file onto the chart's defaults (maps merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def production_values() -> dict:
    return merged(chart_values(), load_yaml(CHART / "values-production.yaml"))


def test_the_production_values_example_is_valid_and_complete() -> None:
    values = production_values()
    jsonschema.Draft7Validator(chart_schema()).validate(values)
    assert values["replicaCount"] == 3 and values["autoscaling"]["enabled"] is False
    assert values["tls"]["secretName"] and values["probes"]["kind"] == "http", "TLS from one Secret, probed over HTTPS"
    assert values["secretEnv"]["stateStore"] == {"name": "depscreen-redis", "key": "url"}
    assert values["server"]["stateStore"] == "", "the Redis URL (with its password) comes from the Secret only"
    tokens = Path(values["server"]["authTokens"])
    mounts = {mount["name"]: mount["mountPath"] for mount in values["extraVolumeMounts"]}
    volumes = {volume["name"]: volume["secret"]["secretName"] for volume in values["extraVolumes"]}
    assert mounts == {"auth-tokens": str(tokens.parent)} and volumes == {"auth-tokens": "depscreen-tokens"}
    header = (CHART / "values-production.yaml").read_text()
    for secret in ("depscreen-tls", "depscreen-redis", "depscreen-tokens"):
        assert re.search(rf"kubectl create secret (tls|generic) {secret} ", header), f"says how to create {secret}"
    settings = {camel_to_snake(key): value for key, value in values["server"].items() if value != ""}
    assert ServerSettings(host="0.0.0.0", **settings).auth_mode == "tokens"


def test_the_chart_refuses_at_template_time_what_would_not_run() -> None:
    """Guards `helm template` hits before anything is applied (rendered for real by the helm tests below)."""
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    guards = re.findall(r'\{\{- if (.+?) \}\}\n\{\{- fail "([^"]+)"', deployment)
    conditions = {message.split(":")[0]: condition for condition, message in guards}
    assert "no authentication is configured, and the server refuses to start open on 0.0.0.0" in conditions
    auth = conditions["no authentication is configured, and the server refuses to start open on 0.0.0.0"]
    assert auth == 'not (or $authenticated (eq $s.auth "none"))'
    for setting in ("$s.authTokens", "$s.jwtJwks", "$s.jwtJwksUrl", "$s.tlsClientCa", '(hasKey $secret "authTokens")'):
        assert setting in deployment, setting
    adapter = "and .Values.autoscaling.enabled (not .Values.autoscaling.metricsAdapter)"
    assert adapter in {condition for condition, _ in guards}
    assert "and .Values.tls.secretName (or $s.tlsCert $s.tlsKey)" in {condition for condition, _ in guards}
    hpa = (CHART / "templates" / "hpa.yaml").read_text()
    assert "{{- if and .Values.autoscaling.enabled .Values.autoscaling.metricsAdapter }}" in hpa
    assert chart_values()["autoscaling"]["enabled"] is False, "autoscaling is off unless its adapter is declared"


def chart_variables(values: dict) -> set[str]:
    """The DEPSCREEN_* variables the Deployment sets: the host, each server.* key and each secretEnv key."""
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    literal = set(re.findall(r"name: (DEPSCREEN_[A-Z_]+)", deployment))
    keys = [*values["server"], *values["secretEnv"]]
    return literal | {env_name(camel_to_snake(key)) for key in keys}


def healthcheck_variables() -> set[str]:
    """The DEPSCREEN_* variables the image's health check reads."""
    return set(re.findall(r"DEPSCREEN_[A-Z_]+", (DOCKER / "healthcheck.py").read_text()))


def test_every_variable_the_chart_sets_is_a_server_setting_or_the_health_checks() -> None:
    own = {name for name in healthcheck_variables() if name.startswith("DEPSCREEN_HEALTHCHECK_")}
    assert healthcheck_variables() - own <= SETTING_VARIABLES, "the health check reads the server's own settings"
    assert own == {"DEPSCREEN_HEALTHCHECK_CA", "DEPSCREEN_HEALTHCHECK_CERT", "DEPSCREEN_HEALTHCHECK_KEY"}
    assert chart_variables(chart_values()) <= SETTING_VARIABLES | own
    assert set(chart_schema()["properties"]["server"]["properties"]) == set(chart_values()["server"])


def test_every_server_setting_can_be_set_through_the_chart() -> None:
    server = {camel_to_snake(key) for key in chart_values()["server"]}
    for f in fields(ServerSettings):
        secret = any(word in f.name for word in SECRET_WORDS)
        if secret:
            assert f.name not in server, f"{f.name} is a secret: set it through secretEnv, not server.*"
        elif f.name != "host":
            assert f.name in server, f"add {f.name} to server.* in values.yaml and values.schema.json"


def test_chart_values_make_a_valid_server_configuration() -> None:
    """The chart's defaults, as the strings the pod gets, pass the server's own checks."""
    kinds = {f.name: type(f.default) for f in fields(ServerSettings)}
    settings = {}
    for key, value in chart_values()["server"].items():
        name = camel_to_snake(key)
        if value != "":
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            settings[name] = kinds[name](text)
    ServerSettings(host="0.0.0.0", **settings)


def test_chart_pods_run_non_root_read_only_with_grpc_probes() -> None:
    values = chart_values()
    assert values["podSecurityContext"]["runAsNonRoot"] is True and values["podSecurityContext"]["runAsUser"] != 0
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["probes"]["kind"] == "grpc"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "grpc:" in helpers and "path: {{ $path }}" in helpers
    assert '$path := ternary "/healthz" "/readyz" (eq .service "")' in helpers, "readiness asks /readyz over HTTP"
    assert values["autoscaling"]["targetSessionsPerPod"] <= values["server"]["maxSessions"]


def test_extra_env_is_for_other_variables_and_reaches_the_container() -> None:
    values = copy.deepcopy(chart_values())
    values["extraEnv"] = [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://collector:4317"}]
    jsonschema.Draft7Validator(chart_schema()).validate(values)
    values["extraEnv"] = [{"name": "DEPSCREEN_MAX_SESSIONS", "value": "8"}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(chart_schema()).validate(values)
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert "{{- with .Values.extraEnv }}\n            {{- toYaml . | nindent 12 }}" in deployment


def test_notes_say_how_clients_authenticate_not_that_there_is_no_authentication() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "no authentication or TLS yet" not in notes
    for value in ("$s.authTokens", "$s.jwtJwksUrl", "$s.tlsClientCa", '$s.auth "none"', "$s.tlsCert"):
        assert value in notes, value
    assert "demo model" not in (CHART / "values.yaml").read_text()


def test_every_template_says_what_it_is_for() -> None:
    for template in (CHART / "templates").glob("*.yaml"):
        assert template.read_text().startswith("{{- /*"), template.name


# The real tools, where installed


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH")
    return path


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


AUTH = "server.authTokens=/etc/depscreen/auth/tokens"
"""The least a render needs: the chart refuses one without authentication."""


def helm_command(*sets: str, values_file: Path | None = None) -> list[str]:
    command = [tool("helm"), "template", "screening", str(CHART)]
    if values_file is not None:
        command += ["-f", str(values_file)]
    for item in sets:
        command += ["--set", item]
    return command


def helm_template(*sets: str, values_file: Path | None = None) -> list[dict]:
    result = run(helm_command(*sets, values_file=values_file))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize(
    "sets", [[AUTH], [AUTH, "probes.kind=http", "autoscaling.enabled=false", "serviceMonitor.enabled=true"]]
)
def test_helm_lint(sets: list[str]) -> None:
    command = [tool("helm"), "lint", "--strict", str(CHART)]
    for item in sets:
        command += ["--set", item]
    result = run(command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_template_renders_the_workload() -> None:
    docs = helm_template(AUTH)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["Deployment", "PodDisruptionBudget", "Service", "Service"], "no HPA unless declared"
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    values = chart_values()
    expected = {env_name(camel_to_snake(key)) for key, value in values["server"].items() if value != ""}
    assert {e["name"] for e in container["env"]} == expected | {"DEPSCREEN_HOST", "DEPSCREEN_AUTH_TOKENS"}
    assert container["readinessProbe"]["grpc"] == {"port": DEFAULTS.grpc_port, "service": "depscreen.v1.Screening"}
    assert {e["name"]: e["value"] for e in container["env"]}["DEPSCREEN_MAX_MESSAGE_BYTES"] == str(
        DEFAULTS.max_message_bytes
    )
    monitored = helm_template(
        AUTH,
        "serviceMonitor.enabled=true",
        "probes.kind=http",
        "secretEnv.turnCredential.name=turn",
        "secretEnv.turnCredential.key=credential",
    )
    assert "ServiceMonitor" in {doc["kind"] for doc in monitored}
    deployment = next(doc for doc in monitored if doc["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_helm_template_renders_the_prometheus_rule_with_the_alerts() -> None:
    docs = helm_template(AUTH, "prometheusRule.enabled=true", "prometheusRule.labels.release=kube-prometheus")
    rule = next(doc for doc in docs if doc["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert rule["spec"]["groups"] == load_yaml(ALERTS)["groups"]


def test_helm_template_probes_a_tls_server_over_https_and_an_mtls_server_with_the_health_check() -> None:
    tls = ["server.tlsCert=/tls/tls.crt", "server.tlsKey=/tls/tls.key", "server.auth=none"]
    docs = helm_template(*tls, "probes.kind=http")
    container = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTPS"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTPS"}
    mtls = [*tls, "server.tlsClientCa=/tls/ca.crt", "probes.kind=exec"]
    docs = helm_template(*mtls, "probes.clientCert=/probe/tls.crt", "probes.clientKey=/probe/tls.key")
    container = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["exec"]["command"] == ["python", "/opt/depscreen/healthcheck.py", "/healthz"]
    assert container["readinessProbe"]["exec"]["command"] == ["python", "/opt/depscreen/healthcheck.py", "/readyz"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (
        env["DEPSCREEN_HEALTHCHECK_CERT"] == "/probe/tls.crt" and env["DEPSCREEN_HEALTHCHECK_KEY"] == "/probe/tls.key"
    )
    for refused, words in (([*tls], "gRPC probes speak plaintext"), ([*mtls[:-1], "probes.kind=http"], "client")):
        command = [tool("helm"), "template", "screening", str(CHART)]
        for item in refused:
            command += ["--set", item]
        result = run(command)
        assert result.returncode != 0 and words in result.stderr


def test_helm_template_refuses_a_session_target_over_the_limit() -> None:
    adapter = ("autoscaling.enabled=true", "autoscaling.metricsAdapter=true")
    result = run(helm_command(AUTH, *adapter, "autoscaling.targetSessionsPerPod=100"))
    assert result.returncode != 0 and "targetSessionsPerPod" in result.stderr


def test_helm_template_refuses_no_authentication_and_autoscaling_without_its_adapter() -> None:
    open_server = run(helm_command())
    assert open_server.returncode != 0 and "no authentication is configured" in open_server.stderr
    no_adapter = run(helm_command(AUTH, "autoscaling.enabled=true"))
    assert no_adapter.returncode != 0 and "autoscaling.metricsAdapter=true" in no_adapter.stderr
    scaled = helm_template(AUTH, "autoscaling.enabled=true", "autoscaling.metricsAdapter=true")
    assert "HorizontalPodAutoscaler" in {doc["kind"] for doc in scaled}
    both = run(
        helm_command(
            AUTH, "server.stateStore=redis://r:6379/0", "secretEnv.stateStore.name=r", "secretEnv.stateStore.key=url"
        )
    )
    assert both.returncode != 0 and "server.stateStore and secretEnv.stateStore" in both.stderr


def test_helm_template_renders_the_production_example() -> None:
    docs = helm_template(values_file=CHART / "values-production.yaml")
    assert sorted(doc["kind"] for doc in docs) == ["Deployment", "PodDisruptionBudget", "Service", "Service"]
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["DEPSCREEN_STATE_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "depscreen-redis", "key": "url"}
    assert env["DEPSCREEN_TLS_CERT"]["value"] == "/etc/depscreen/tls/tls.crt"
    assert env["DEPSCREEN_TLS_KEY"]["value"] == "/etc/depscreen/tls/tls.key"
    assert env["DEPSCREEN_AUTH_TOKENS"]["value"] == "/etc/depscreen/auth/tokens"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["tls"]["secret"] == {"secretName": "depscreen-tls"}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["tls"] == "/etc/depscreen/tls" and mounts["auth-tokens"] == "/etc/depscreen/auth"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTPS"}


def test_promtool_checks_the_config_and_the_rules_and_runs_the_alert_tests() -> None:
    promtool = tool("promtool")
    for command in (
        [promtool, "check", "config", "deploy/prometheus/prometheus.yml"],
        [promtool, "check", "rules", "deploy/prometheus/alerts.yml"],
        [promtool, "test", "rules", "deploy/prometheus/alerts_test.yml"],
    ):
        result = run(command)
        assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_validates_the_compose_file() -> None:
    docker = shutil.which("docker")
    if docker is not None and run([docker, "compose", "version"]).returncode == 0:
        command = [docker, "compose"]
    else:
        command = [tool("docker-compose")]
    result = run([*command, "-f", str(COMPOSE), "config", "--quiet"])
    assert result.returncode == 0, result.stderr
