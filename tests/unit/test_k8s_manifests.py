"""deploy/k8s must render (base + each overlay) into objects that are valid for Kubernetes 1.30
and wired the way the services need: probes everywhere, schedulers >= 2, GPUs for vLLM engines,
disruption budgets, drains that Kubernetes does not cut short, secrets referenced and never
written down.

There is no cluster and no kustomize binary on CI machines (PyPI has no kustomize), so
`render` below is a small kustomize: it supports exactly the features deploy/k8s uses -
`resources` (files and directories), `patches` (JSON 6902 operations with a kind/name target)
and `images` - and refuses anything else, so an unsupported feature fails loudly instead of
rendering differently. Where `kubectl` is installed its `kubectl kustomize` output is compared
with ours. Every rendered object is then checked against the Kubernetes JSON schemas of
`kubernetes-validate` (strict: unknown fields are errors).
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from autellix.local import deploy_secrets
from autellix.local.embedded import find_nats_server
from autellix.runtime.service import READY_FILE_ENV

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ("sim", "gpu")
WORKLOADS = ("Deployment", "StatefulSet")
OUR_IMAGES = ("autellix/app", "autellix/engine-vllm")

Obj = dict[str, Any]

# --------------------------------------------------------------------------- the renderer

_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
_IMAGE_KEYS = {"name", "newName", "newTag", "digest"}


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize <directory>` prints, in resource order."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - _KUSTOMIZATION_KEYS
    if unknown:
        raise NotImplementedError(f"{directory}: kustomize features not rendered here: {unknown}")
    objects: list[Obj] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for patch in kust.get("patches", []):
        _apply_patch(directory, patch, objects)
    for image in kust.get("images", []):
        _set_image(image, objects)
    return objects


def _apply_patch(directory: Path, patch: Obj, objects: list[Obj]) -> None:
    if set(patch) != {"path", "target"} or set(patch["target"]) != {"kind", "name"}:
        raise NotImplementedError(f"only path + kind/name target patches: {patch}")
    ops = yaml.safe_load((directory / patch["path"]).read_text())
    if not isinstance(ops, list):
        raise NotImplementedError(f"{patch['path']}: only JSON 6902 patches (a list of ops)")
    targets = [
        o
        for o in objects
        if o["kind"] == patch["target"]["kind"] and o["metadata"]["name"] == patch["target"]["name"]
    ]
    if not targets:
        raise ValueError(f"patch {patch['path']} matches no object")
    for obj in targets:
        for op in ops:
            _json_patch(obj, op)


def _json_patch(doc: Obj, op: Obj) -> None:
    """One RFC 6902 `add`, `replace` or `remove` (the operations deploy/k8s uses)."""
    *parents, last = [
        t.replace("~1", "/").replace("~0", "~") for t in op["path"].lstrip("/").split("/")
    ]
    node: Any = doc
    for token in parents:
        node = node[int(token)] if isinstance(node, list) else node[token]
    kind = op["op"]
    if kind not in ("add", "replace", "remove"):
        raise NotImplementedError(f"JSON patch op {kind!r}")
    if isinstance(node, list):
        if kind == "add":
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[int(last)] = copy.deepcopy(op["value"])
        else:
            del node[int(last)]
        return
    if kind != "add" and last not in node:
        raise KeyError(f"{kind} {op['path']}: no such member")
    if kind == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(op["value"])


def _set_image(image: Obj, objects: list[Obj]) -> None:
    if set(image) - _IMAGE_KEYS:
        raise NotImplementedError(f"images entry {image}")
    for container in (c for o in objects for c in containers(o, init=True)):
        name, tag, digest = _split_image(container["image"])
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        tag = image.get("newTag", tag)
        digest = image.get("digest", digest)
        container["image"] = name + (f"@{digest}" if digest else f":{tag}" if tag else "")


def _split_image(ref: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest); a ':' after the last '/' starts a tag (not a registry port)."""
    ref, _, digest = ref.partition("@")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :], digest or None
    return ref, None, digest or None


# --------------------------------------------------------------------------- reading objects


def pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in (*WORKLOADS, "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj: Obj, *, init: bool = False) -> Iterator[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    return found


def container_of(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = one(objects, kind, name)["spec"]["template"]["spec"]["containers"]
    return found


def env_config(objects: list[Obj]) -> dict[str, str]:
    return one(objects, "ConfigMap", "autellix-env")["data"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


# --------------------------------------------------------------------------- the renderer's own


def test_json_patch_ops_match_rfc_6902() -> None:
    doc: Obj = {"a": {"b~/c": 1}, "l": [1, 2]}
    _json_patch(doc, {"op": "add", "path": "/l/-", "value": 3})
    _json_patch(doc, {"op": "add", "path": "/l/0", "value": 0})
    _json_patch(doc, {"op": "replace", "path": "/a/b~0~1c", "value": 2})
    _json_patch(doc, {"op": "add", "path": "/new", "value": {"x": 1}})
    _json_patch(doc, {"op": "remove", "path": "/l/1"})
    assert doc == {"a": {"b~/c": 2}, "l": [0, 2, 3], "new": {"x": 1}}
    with pytest.raises(KeyError):
        _json_patch(doc, {"op": "replace", "path": "/missing", "value": 1})
    with pytest.raises(NotImplementedError):
        _json_patch(doc, {"op": "move", "from": "/a", "path": "/b"})


def test_image_references_split_like_kustomize() -> None:
    assert _split_image("autellix/app:latest") == ("autellix/app", "latest", None)
    assert _split_image("registry:5000/autellix/app") == ("registry:5000/autellix/app", None, None)
    assert _split_image("nats@sha256:ab") == ("nats", None, "sha256:ab")


def test_unsupported_kustomize_features_are_refused(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(NotImplementedError, match="namePrefix"):
        render(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout

    def key(o: Obj) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=key)
    assert theirs == sorted(render(K8S / "overlays" / name), key=key)


# --------------------------------------------------------------------------- schemas


def test_every_object_is_valid_for_the_named_kubernetes_version(
    overlay: tuple[str, list[Obj]],
) -> None:
    name, objects = overlay
    assert len(objects) >= 15, name
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_the_schema_check_can_fail() -> None:
    bad = copy.deepcopy(one(render(K8S / "overlays" / "sim"), "Deployment", "scheduler"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------- wiring


def test_every_long_running_container_has_readiness_and_liveness_probes(
    overlay: tuple[str, list[Obj]],
) -> None:
    """Init containers and the migration Job run to completion: Kubernetes allows no probes on
    the former, and the latter serves nothing."""
    _, objects = overlay
    ready_file = env_config(objects)[READY_FILE_ENV]
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        for c in containers(obj):
            where = f"{obj['metadata']['name']}/{c['name']}"
            ports = {p["name"] for p in c.get("ports", [])}
            for probe_kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = c.get(probe_kind)
                if probe is None:
                    assert probe_kind == "startupProbe", f"{where}: no {probe_kind}"
                    continue
                if "httpGet" in probe:
                    assert probe["httpGet"]["port"] in ports, f"{where}: {probe_kind} port"
                else:  # the ready file the process writes (and env points it at)
                    assert probe["exec"]["command"] == ["test", "-f", ready_file], where
                    assert c["envFrom"] == [{"configMapRef": {"name": "autellix-env"}}], where
        for c in pod_spec(obj).get("initContainers", []):  # type: ignore[union-attr]
            assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(c), c["name"]


def test_liveness_ports_are_served(overlay: tuple[str, list[Obj]]) -> None:
    """:9464 answers only with the Prometheus exporter on, on all interfaces (the kubelet
    probes the pod's address)."""
    _, objects = overlay
    env = env_config(objects)
    assert env["OTEL_METRICS_EXPORTER"] == "prometheus"
    assert env["OTEL_EXPORTER_PROMETHEUS_HOST"] == "0.0.0.0"
    for name in ("scheduler", "engine"):
        kind = "Deployment" if name == "scheduler" else "StatefulSet"
        c = container_of(objects, kind, name)
        (port,) = (p for p in c["ports"] if p["name"] == c["livenessProbe"]["httpGet"]["port"])
        assert str(port["containerPort"]) == env["OTEL_EXPORTER_PROMETHEUS_PORT"]
    fe = container_of(objects, "Deployment", "frontend")
    args = fe["args"]
    assert args[args.index("--http-host") + 1] == "0.0.0.0"
    (http,) = (p for p in fe["ports"] if p["name"] == "http")
    assert str(http["containerPort"]) == args[args.index("--http-port") + 1]
    assert fe["readinessProbe"]["httpGet"]["path"] == "/health"


def test_replicas_budgets_and_autoscaling(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    assert one(objects, "Deployment", "scheduler")["spec"]["replicas"] >= 2
    assert one(objects, "StatefulSet", "nats")["spec"]["replicas"] == 3
    hpa = one(objects, "HorizontalPodAutoscaler", "frontend")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "frontend",
    }
    assert hpa["minReplicas"] >= 2
    assert "replicas" not in one(objects, "Deployment", "frontend")["spec"]  # the HPA's to set
    fe = container_of(objects, "Deployment", "frontend")
    assert "cpu" in fe["resources"]["requests"]  # utilization is relative to the request
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for workload in (o for o in objects if o["kind"] in WORKLOADS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selected = [
            p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selected) == 1, f"{workload['metadata']['name']}: {len(selected)} PDBs"


def test_engines_get_gpus_only_in_the_gpu_overlay(rendered: dict[str, list[Obj]]) -> None:
    gpu = container_of(rendered["gpu"], "StatefulSet", "engine")
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] >= 1
    assert (
        gpu["resources"]["limits"]["nvidia.com/gpu"]
        == gpu["resources"]["requests"]["nvidia.com/gpu"]
    )
    assert gpu["args"][gpu["args"].index("--backend") + 1] == "vllm"
    assert gpu["image"].startswith("autellix/engine-vllm")
    assert {m["mountPath"] for m in gpu["volumeMounts"]} >= {"/dev/shm", "/root/.cache/huggingface"}
    sim = container_of(rendered["sim"], "StatefulSet", "engine")
    assert sim["args"][sim["args"].index("--backend") + 1] == "sim"
    assert "nvidia.com/gpu" not in yaml.safe_dump(rendered["sim"])


def test_draining_engines_are_not_killed(overlay: tuple[str, list[Obj]]) -> None:
    """SIGTERM: running calls get --drain-timeout, then are handed back; the process caps its
    whole stop at 60 s (src/autellix/runtime/service.py). The grace period must outlast both,
    or Kubernetes SIGKILLs an engine before it has handed its calls back."""
    _, objects = overlay
    engine = one(objects, "StatefulSet", "engine")["spec"]["template"]["spec"]
    args = engine["containers"][0]["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    assert engine["terminationGracePeriodSeconds"] >= max(drain + 15, 60)
    assert "$(POD_NAME)" == args[args.index("--engine-id") + 1]  # stable id per pod


def test_variable_references_resolve(overlay: tuple[str, list[Obj]]) -> None:
    """Kubernetes expands `$(VAR)` in args and env values only for variables defined before
    it (envFrom, then env in order); anything else stays a literal `$(VAR)`."""
    _, objects = overlay
    configmaps = {
        o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"
    }
    for c in (c for o in objects for c in containers(o, init=True)):
        defined = {
            k for ref in c.get("envFrom", []) for k in configmaps[ref["configMapRef"]["name"]]
        }
        for var in c.get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                assert ref in defined, f"{c['name']}: {var['name']} uses {ref} before it is set"
            defined.add(var["name"])
        for part in [*c.get("command", []), *c.get("args", [])]:
            for ref in re.findall(r"\$\((\w+)\)", part):
                assert ref in defined, f"{c['name']}: {part}"


def test_secrets_are_referenced_never_written(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    assert not [o for o in objects if o["kind"] == "Secret"]
    text = yaml.safe_dump(objects)
    assert "change-me" not in text and "POSTGRES_PASSWORD" not in text
    sensitive = re.compile(r"PASSWORD|TOKEN|SECRET|DATABASE_URL|_USER$")
    for c in (c for o in objects for c in containers(o, init=True)):
        for var in c.get("env", []):
            if sensitive.search(var["name"]):
                assert "secretKeyRef" in var.get("valueFrom", {}), f"{c['name']}: {var['name']}"
            elif "://" in var.get("value", ""):  # a URL with credentials only from secrets
                userinfo = var["value"].split("://", 1)[1].partition("@")
                assert not userinfo[1] or re.fullmatch(r"(\$\(\w+\):?)+", userinfo[0]), var
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        for key in cm["data"]:
            assert not sensitive.search(key), f"{cm['metadata']['name']}: {key}"


def test_services_wait_for_the_migration(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    job = one(objects, "Job", "autellix-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["autellix", "db", "upgrade"]
    for workload in (
        o for o in objects if o["kind"] in WORKLOADS and o["metadata"]["name"] != "nats"
    ):
        (init,) = workload["spec"]["template"]["spec"]["initContainers"]
        assert "autellix db current" in " ".join(init["command"]), workload["metadata"]["name"]


def _argv(c: Obj) -> list[str]:
    """A container's command line as this machine runs it: `$(VAR)` → a sample value, the
    interpreter → this one, `autellix` → `python -m autellix.cli`, a shell loop → its command."""
    words = [re.sub(r"\$\(\w+\)", "x-0", w) for w in [*c["command"], *c.get("args", [])]]
    if words[:2] == ["sh", "-c"]:
        words = re.fullmatch(r"until (.+?); do sleep \d+; done", words[2]).group(1).split()  # type: ignore[union-attr]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    assert words[0] == "autellix", words
    return [sys.executable, "-m", "autellix.cli", *words[1:]]


def test_every_command_exists_with_its_flags(rendered: dict[str, list[Obj]]) -> None:
    """Each of our containers' command lines with `--help` appended: the module must exist and
    click rejects an unknown flag even then (tests/unit/test_compose.py shows it can fail)."""
    lines = {
        tuple(_argv(c))
        for objects in rendered.values()
        for o in objects
        for c in containers(o, init=True)
        if c["image"].startswith(OUR_IMAGES)
    }
    assert len(lines) >= 6  # frontend, scheduler, two engines, migrate, wait-for-migration
    for argv in lines:
        proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stderr[-2000:]}"


# --------------------------------------------------------------------------- NATS


def test_nats_routes_name_every_server_by_its_dns_name(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    sts = one(objects, "StatefulSet", "nats")
    headless = one(objects, "Service", sts["spec"]["serviceName"])["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    conf = one(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    routes = re.findall(r"nats://([\w.-]+):(\d+)", conf)
    cluster_port = next(p["port"] for p in headless["ports"] if p["name"] == "cluster")
    assert routes == [
        (f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}", str(cluster_port))
        for i in range(sts["spec"]["replicas"])
    ]
    store = re.search(r"store_dir:\s*(\S+)", conf).group(1)  # type: ignore[union-attr]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert store.startswith(mounts[claim["metadata"]["name"]] + "/")  # JetStream on the PVC


# --------------------------------------------------------------------------- generated Secrets


def secret_generator(directory: Path) -> list[Obj]:
    """The Secrets `kubectl kustomize` makes of the `kustomization.yaml` that `autellix secrets
    generate` writes: `secretGenerator` entries of `files` (``key=path`` or ``path``), without
    name hashes; anything else is refused, like `render` refuses what it does not know."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if set(kust) - {"apiVersion", "kind", "generatorOptions", "secretGenerator"} or kust[
        "generatorOptions"
    ] != {"disableNameSuffixHash": True}:
        raise NotImplementedError(f"{directory}: {kust}")
    out: list[Obj] = []
    for gen in kust["secretGenerator"]:
        if set(gen) != {"name", "files"}:
            raise NotImplementedError(f"secretGenerator entry {gen}")
        data = {}
        for entry in gen["files"]:
            key, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
            content = (directory / path).read_bytes()
            data[key or Path(path).name] = base64.b64encode(content).decode()
        out.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
             "type": "Opaque", "data": data}
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Obj]]:
    out = tmp_path_factory.mktemp("k8s") / "secrets"
    deploy_secrets.generate(out, hosts=("nats", "nats.autellix.svc", "localhost"))
    return out, secret_generator(out)


def _secret_volumes(obj: Obj) -> dict[str, str]:
    """secret name -> volume name of a workload's secret volumes (plain and projected)."""
    found: dict[str, str] = {}
    for vol in pod_spec(obj).get("volumes", []):  # type: ignore[union-attr]
        if "secret" in vol:
            found[vol["secret"]["secretName"]] = vol["name"]
        for source in vol.get("projected", {}).get("sources", []):
            if "secret" in source:
                found[source["secret"]["name"]] = vol["name"]
    return found


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_secret_generator_agrees_with_kubectl_kustomize(
    generated: tuple[Path, list[Obj]],
) -> None:
    directory, ours = generated
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip

    def decoded(objects: list[Obj]) -> list[Obj]:  # kubectl wraps long base64 lines
        return sorted(
            (
                {
                    **o,
                    "data": {k: base64.b64decode("".join(v.split())) for k, v in o["data"].items()},
                }
                for o in objects
            ),
            key=lambda o: o["metadata"]["name"],
        )

    assert decoded([d for d in yaml.safe_load_all(out) if d]) == decoded(ours)


def test_generated_secrets_are_valid_and_are_the_ones_referenced(
    generated: tuple[Path, list[Obj]], rendered: dict[str, list[Obj]]
) -> None:
    _, secrets = generated
    for obj in secrets:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    made = {o["metadata"]["name"]: set(o["data"]) for o in secrets}
    for objects in rendered.values():
        for obj in objects:
            for name in _secret_volumes(obj) if pod_spec(obj) else {}:
                assert name in made, f"{obj['metadata']['name']} mounts {name}: not generated"
    # the users are not written down anywhere in the manifests
    text = yaml.safe_dump(rendered)
    for obj in secrets:
        for value in obj["data"].values():
            assert base64.b64decode(value).decode() not in text


def test_each_workload_mounts_only_its_own_role(
    overlay: tuple[str, list[Obj]], generated: tuple[Path, list[Obj]]
) -> None:
    """A frontend pod holds the frontend's NATS user and the API keys, a scheduler pod the
    scheduler's, an engine pod the engine's, a NATS pod the servers' config; at the paths that
    autellix-env's AUTELLIX_NATS_USER_FILE / AUTELLIX_NATS_CA_FILE name."""
    name, objects = overlay
    env = env_config(objects)
    assert env["AUTELLIX_NATS_URL"].startswith("tls://")
    user_dir = str(Path(env["AUTELLIX_NATS_USER_FILE"]).parent)
    assert str(Path(env["AUTELLIX_NATS_CA_FILE"]).parent) == user_dir
    made = {o["metadata"]["name"]: set(o["data"]) for o in generated[1]}
    expected = {
        ("Deployment", "frontend"): {"autellix-nats-frontend", "autellix-api-keys"},
        ("Deployment", "scheduler"): {"autellix-nats-scheduler"},
        ("StatefulSet", "engine"): {"autellix-nats-engine"},
        ("StatefulSet", "nats"): {"autellix-nats-server"},
        ("Job", "autellix-migrate"): set(),
    }
    for obj in (o for o in objects if pod_spec(o) is not None):
        key = (obj["kind"], obj["metadata"]["name"])
        volumes = _secret_volumes(obj)
        assert set(volumes) == expected[key], f"{name}: {key}: {set(volumes)}"
        role = next((s for s in volumes if s.startswith("autellix-nats-")), None)
        if role is None or role == "autellix-nats-server":
            continue
        (c,) = containers(obj)
        (mount,) = (m for m in c["volumeMounts"] if m["name"] == volumes[role])
        assert mount["mountPath"] == user_dir and mount.get("readOnly"), key
        assert {
            Path(env["AUTELLIX_NATS_USER_FILE"]).name,
            Path(env["AUTELLIX_NATS_CA_FILE"]).name,
        } <= made[role]
    fe = container_of(objects, "Deployment", "frontend")
    keys_dir = next(
        m["mountPath"] for m in fe["volumeMounts"]
        if m["name"] == _secret_volumes(one(objects, "Deployment", "frontend"))["autellix-api-keys"]
    )  # fmt: skip
    key_file = fe["args"][fe["args"].index("--api-key-file") + 1]
    assert (
        str(Path(key_file).parent) == keys_dir and Path(key_file).name in made["autellix-api-keys"]
    )


def test_nats_server_accepts_the_config(tmp_path: Path, generated: tuple[Path, list[Obj]]) -> None:
    """`nats-server -t` parses the config as the StatefulSet's projected volume lays it out:
    nats.conf from the ConfigMap, the generated users and certificate from the Secret beside it
    (unknown fields and missing includes are errors)."""
    objects = render(K8S / "base")
    sts = one(objects, "StatefulSet", "nats")
    (c,) = containers(sts)
    conf_dir = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    secrets = {o["metadata"]["name"]: o["data"] for o in generated[1]}
    (volume,) = (v for v in pod_spec(sts)["volumes"] if v["name"] == "config")  # type: ignore[index]
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            files = one(objects, "ConfigMap", source["configMap"]["name"])["data"]
            for key, text in files.items():
                (tmp_path / key).write_text(text.replace(conf_dir + "/", f"{tmp_path}/"))
        else:
            for key, value in secrets[source["secret"]["name"]].items():
                (tmp_path / key).write_bytes(base64.b64decode(value))
    conf = tmp_path / "nats.conf"
    assert c["args"] == ["-c", f"{conf_dir}/nats.conf"]
    env = {**os.environ, **{e["name"]: "x" for e in c["env"]}}  # what the StatefulSet sets
    server = str(find_nats_server())
    ok = subprocess.run([server, "-t", "-c", str(conf)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "nats-auth.conf").unlink()
    bad = subprocess.run([server, "-t", "-c", str(conf)], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "nats-auth.conf" in bad.stderr
