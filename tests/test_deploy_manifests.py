"""The shipping files parse and agree with each other: KubeRay manifests against the CRD fields they use, the
RayService against serve/config.yaml, images against the kustomization, no secret values anywhere, and the
Dockerfile, CI workflows and pre-commit against the lock file. Nothing is built or applied (no Docker, no cluster).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve.front import front_env, grpc_message_bytes
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
WORKFLOWS = ROOT / ".github" / "workflows"
SERVE_CONFIG = ROOT / "serve" / "config.yaml"
ARTIFACTS_MOUNT = "/mnt/mycolens"  # where every Ray pod mounts the shared volume (deploy/storage.yaml)

# ---------------------------------------------------------------------------------------------------------------
# The KubeRay CRD fields these manifests may use (ray.io/v1, KubeRay 1.5: docs/reference/api.md), per object type.
# A typo or a field of another version fails here instead of being pruned silently by the API server.
CLUSTER_SPEC = {
    "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec", "workerGroupSpecs",
    "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions", "authOptions",
}  # fmt: skip
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_GROUP = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "scaleStrategy",
    "numOfHosts", "idleTimeoutSeconds", "suspend",
}  # fmt: skip
AUTOSCALER = {
    "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds", "upscalingMode", "version",
    "env", "envFrom", "volumeMounts",
}  # fmt: skip
AUTH_OPTIONS = {"mode"}
RAYSERVICE_SPEC = {
    "serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy", "excludeHeadPodFromServeSvc",
    "serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold",
}  # fmt: skip
RAYJOB_SPEC = {
    "entrypoint", "rayClusterSpec", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
    "backoffLimit", "submissionMode", "runtimeEnvYAML", "jobId", "metadata", "clusterSelector", "submitterConfig",
    "submitterPodTemplate", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "suspend",
    "managedBy", "deletionStrategy",
}  # fmt: skip
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
SERVE_CONFIG_KEYS = {"proxy_location", "http_options", "grpc_options", "logging_config", "applications"}

SECRET_NAME = re.compile(r"(?i)(token|secret|passw|api[_-]?key|access[_-]?key|credential|private[_-]?key)")
SECRET_VALUE = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"xox[abpr]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"sk-[A-Za-z0-9]{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)wandb[_-]?api[_-]?key\s*[:=]\s*['\"]?[0-9a-f]{40}"),
    re.compile(r"(?i)(token|password|secret|api[_-]?key)\s*[:=]\s*['\"]?[A-Za-z0-9+/_\-]{24,}"),
]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def locked(name: str) -> str:
    """The version of `name` pinned in requirements.lock."""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        pkg, _, version = line.partition("==")
        if pkg.strip().lower().replace("_", "-") == name.lower():
            return version.strip()
    raise AssertionError(f"{name} is not pinned in requirements.lock")


def project_version() -> str:
    return re.search(r'(?m)^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


def kustomization(folder: Path = DEPLOY) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource the base kustomization lists, by `Kind/name`."""
    out = {}
    for rel in kustomization()["resources"]:
        for doc in load_docs(DEPLOY / rel):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def of_kind(kind: str, objs: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [d for d in (objs or manifests()).values() if d["kind"] == kind]


def locations() -> dict[str, str]:
    """The model/data location values (configMapGenerator literals)."""
    (gen,) = [g for g in kustomization()["configMapGenerator"] if g["name"] == "mycolens-locations"]
    return dict(item.split("=", 1) for item in gen["literals"])


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig" if doc["kind"] == "RayService" else "rayClusterSpec"]


def pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cs = cluster_spec(doc)
    return [("head", cs["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in cs["workerGroupSpecs"]
    ]


def containers(objs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, container) for every container of every pod template, KubeRay or not."""
    found = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend((f"{where}/{key}", c) for c in value)
                else:
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    for name, doc in objs.items():
        walk(doc, name)
    return found


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number: CPUs ("500m" -> 0.5) or bytes ("4Gi")."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def ray_cpus(group: dict[str, Any]) -> float:
    """CPUs Ray advertises on a group's pods: rayStartParams num-cpus, else the container's CPU limit."""
    if "num-cpus" in group.get("rayStartParams", {}):
        return float(group["rayStartParams"]["num-cpus"])
    return quantity(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])


def ray_gpus(group: dict[str, Any]) -> float:
    limits = group["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    return float(group.get("rayStartParams", {}).get("num-gpus", limits.get("nvidia.com/gpu", 0)))


def serve_config() -> dict[str, Any]:
    """serve/config.yaml, the config `serve run` / `serve deploy` use on a laptop."""
    return yaml.safe_load(SERVE_CONFIG.read_text())


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove (what the overlays use); a path that does not exist fails like kustomize."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(index, op["value"])
            elif op["op"] == "replace":
                parent[index] = op["value"]
            else:
                parent.pop(index)
        else:
            assert op["op"] == "add" or last in parent, f"{op['op']} {op['path']}: no such field"
            if op["op"] == "remove":
                parent.pop(last)
            else:
                parent[last] = op["value"]
    return doc


def overlay(folder: Path) -> dict[str, dict[str, Any]]:
    """Resources of an overlay whose only base is deploy/: its JSON6902 patches applied."""
    kz = kustomization(folder)
    assert [str((folder / r).resolve()) for r in kz["resources"]] == [str(DEPLOY.resolve())]
    objs = manifests()
    for patch in kz.get("patches", []):
        target = patch["target"]
        key = f"{target['kind']}/{target['name']}"
        assert key in objs, f"{folder.name}: patch target {key} is not a resource of deploy/"
        objs[key] = json_patch(objs[key], yaml.safe_load(patch["patch"]))
    return objs


def entrypoint_overrides(entrypoint: str) -> tuple[str, list[str]]:
    """(script, Hydra overrides) of `python /app/scripts/NAME.py k=v ...`."""
    argv = shlex.split(entrypoint)
    assert argv[0] == "python" and argv[1].startswith("/app/scripts/"), entrypoint
    return argv[1].removeprefix("/app/"), argv[2:]


def compose_entrypoint(entrypoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The job's config as its script's Hydra composes it on the head, with the location values in the environment."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    script, overrides = entrypoint_overrides(entrypoint)
    assert (ROOT / script).is_file(), f"{script} does not exist"
    config_name = re.search(r'config_name="(\w+)"', (ROOT / script).read_text()).group(1)
    for key, value in locations().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    GlobalHydra.instance().clear()
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


# ---------------------------------------------------------------------------------------------------------------
# Parsing and the CRD fields


def test_kustomization_lists_every_manifest_and_each_parses():
    listed = set(kustomization()["resources"])
    present = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, "deploy/kustomization.yaml must list every manifest in deploy/"
    objs = manifests()
    assert {"RayService/mycolens", "RayJob/mycolens-train", "RayJob/mycolens-sweep"} <= set(objs)
    for name, doc in objs.items():
        assert doc.get("apiVersion") and doc["metadata"].get("name"), name
        assert doc["metadata"]["labels"]["app.kubernetes.io/component"] in {"base", "serve", "train", "sweep"}, name
        if doc["kind"] in ("RayService", "RayJob", "RayCluster"):
            assert doc["apiVersion"] == "ray.io/v1", name


def check_cluster_spec(name: str, cs: dict[str, Any]) -> None:
    assert set(cs) <= CLUSTER_SPEC, f"{name}: unknown RayClusterSpec fields {set(cs) - CLUSTER_SPEC}"
    assert cs["rayVersion"] == locked("ray"), f"{name}: rayVersion must be the locked ray {locked('ray')}"
    assert set(cs.get("autoscalerOptions", {})) <= AUTOSCALER
    assert set(cs.get("authOptions", {})) <= AUTH_OPTIONS and cs.get("authOptions", {}).get("mode") in (None, "token")
    head = cs["headGroupSpec"]
    assert set(head) <= HEAD_GROUP, f"{name}: unknown headGroupSpec fields {set(head) - HEAD_GROUP}"
    assert cs["workerGroupSpecs"], f"{name}: no worker group"
    groups = [("head", head)] + [(g.get("groupName"), g) for g in cs["workerGroupSpecs"]]
    for group_name, group in groups:
        where = f"{name}/{group_name}"
        if group is not head:
            assert set(group) <= WORKER_GROUP, f"{where}: unknown fields {set(group) - WORKER_GROUP}"
            assert group["groupName"], where
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
        # KubeRay's rayStartParams is map[string]string: a bare number is rejected by the API server
        params = group["rayStartParams"]
        assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values()), where
        spec = group["template"]["spec"]
        assert spec["containers"], where
        ray = spec["containers"][0]  # KubeRay runs Ray in the first container
        assert ray["name"] and ray["image"], where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(ray["resources"][kind]), f"{where}: {kind} needs cpu and memory"
        assert ray["resources"]["requests"]["cpu"] == ray["resources"]["limits"]["cpu"], f"{where}: CPU req != limit"
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0, where


def test_rayservice_has_the_crd_fields_kuberay_requires():
    for doc in of_kind("RayService"):
        spec = doc["spec"]
        assert set(spec) <= RAYSERVICE_SPEC, f"unknown RayService fields {set(spec) - RAYSERVICE_SPEC}"
        assert isinstance(spec["serveConfigV2"], str), "serveConfigV2 is a YAML string (a `|` block)"
        served = yaml.safe_load(spec["serveConfigV2"])
        assert set(served) <= SERVE_CONFIG_KEYS and served["applications"]
        check_cluster_spec(doc["metadata"]["name"], spec["rayClusterConfig"])


def test_rayjobs_have_the_crd_fields_kuberay_requires():
    jobs = of_kind("RayJob")
    assert len(jobs) == 2
    for doc in jobs:
        spec, name = doc["spec"], doc["metadata"]["name"]
        assert set(spec) <= RAYJOB_SPEC, f"{name}: unknown RayJob fields {set(spec) - RAYJOB_SPEC}"
        assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
        assert spec["shutdownAfterJobFinishes"] is True, f"{name}: the cluster must go away when the job ends"
        assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
        assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
        assert spec.get("activeDeadlineSeconds", 1) > 0
        check_cluster_spec(name, spec["rayClusterSpec"])
        if "runtimeEnvYAML" in spec:
            assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)


# ---------------------------------------------------------------------------------------------------------------
# RayService == serve/config.yaml


def rayservice() -> dict[str, Any]:
    (doc,) = of_kind("RayService")
    return doc


def test_rayservice_runs_the_same_serve_config_as_serve_config_yaml():
    """Applications (import path, route, args, deployments, runtime env) are identical; only the bind host differs."""
    cluster = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    local = serve_config()
    assert cluster["applications"] == local["applications"], "serveConfigV2 drifted from serve/config.yaml"
    for key in set(local) | set(cluster):
        if key != "http_options":
            assert cluster.get(key) == local.get(key), f"serveConfigV2 {key} differs from serve/config.yaml"
    local_http, cluster_http = dict(local.get("http_options") or {}), dict(cluster.get("http_options") or {})
    assert cluster_http.pop("host") == "0.0.0.0", "in a pod the proxy must listen on all interfaces"
    local_http.pop("host", None)
    assert cluster_http == local_http


def effective_serve(tmp_path: Path) -> dict[str, Any]:
    """The `serve` section the application builds itself from: conf/serve plus serveConfigV2's args.overrides."""
    from omegaconf import OmegaConf

    from tests.conftest import compose

    (app,) = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])["applications"]
    cfg = compose(list((app.get("args") or {}).get("overrides") or []), tmp_path)
    return OmegaConf.to_container(cfg.serve, resolve=True)


def test_serve_config_names_what_conf_serve_configures(tmp_path):
    """Deployment names, model variant and port of the Serve config are those of conf/serve."""
    serve = effective_serve(tmp_path)
    cluster = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    assert int(cluster["http_options"]["port"]) == int(serve["port"])
    (app,) = cluster["applications"]
    assert app["name"] == serve["app_name"] and app["route_prefix"] == serve["route_prefix"]
    names = {serve["model"]["name"], serve["ingress"]["name"]}
    for dep in app.get("deployments", []):
        assert dep["name"] in names, f"serve/config.yaml configures {dep['name']}, the app deploys {names}"
    (model,) = [d for d in app["deployments"] if d["name"] == serve["model"]["name"]]
    assert model["user_config"]["variant"] == serve["variant"]
    model_dir = Path("/app") / model["user_config"]["model_dir"]  # relative = from MYCOLENS_ROOT (/app in the image)
    assert model_dir.is_relative_to("/app/models"), "the served model must lie under the /app/models mount"


def serving_group() -> dict[str, Any]:
    (group,) = cluster_spec(rayservice())["workerGroupSpecs"]
    return group


def test_readiness_probe_is_readyz_on_the_serve_port():
    cluster = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    port = int((cluster.get("http_options") or {}).get("port", 8000))
    (app,) = cluster["applications"]
    path = (app.get("route_prefix") or "/").rstrip("/") + "/readyz"
    ray = serving_group()["template"]["spec"]["containers"][0]
    probe = ray["readinessProbe"]["httpGet"]
    assert probe["path"] == path and int(probe["port"]) == port
    assert any(int(p["containerPort"]) == port for p in ray["ports"])


def test_serve_replicas_and_autoscaling_fit_the_worker_group(tmp_path):
    """conf/serve's replicas (or autoscaling bounds) x resources fit the worker group: initially at minReplicas
    pods, at most at maxReplicas pods; and the Ray autoscaler is on when Serve autoscales."""
    serve = effective_serve(tmp_path)
    spec = cluster_spec(rayservice())
    group = serving_group()
    assert ray_cpus(spec["headGroupSpec"]) == 0, "no replicas on the head"
    pod_cpus, pod_gpus = ray_cpus(group), ray_gpus(group)
    first = most = 0.0
    autoscaled = False
    for section in (serve["model"], serve["ingress"]):
        opts = section.get("ray_actor_options") or {}
        cpus, gpus = float(opts.get("num_cpus", 1)), float(opts.get("num_gpus", 0))
        assert cpus <= pod_cpus and gpus <= pod_gpus, f"one {section['name']} replica does not fit a worker pod"
        auto = section.get("autoscaling_config") or (
            {} if section.get("num_replicas") != "auto" else {"max_replicas": 100}
        )
        autoscaled |= bool(auto)
        low = int(auto.get("initial_replicas", auto.get("min_replicas", 1))) if auto else int(section["num_replicas"])
        high = int(auto.get("max_replicas", low)) if auto else low
        first, most = first + cpus * low, most + cpus * high
    assert first <= pod_cpus * group["minReplicas"], (
        f"{first} CPUs of replicas at start; minReplicas give {pod_cpus * group['minReplicas']}"
    )
    assert most <= pod_cpus * group["maxReplicas"], (
        f"{most} CPUs at max replicas; maxReplicas give {pod_cpus * group['maxReplicas']}"
    )
    if autoscaled:
        assert spec["enableInTreeAutoscaling"] is True and group["maxReplicas"] > group["minReplicas"]


def test_rayservice_pods_get_the_proxy_mode_and_reload_token_conf_serve_names(tmp_path):
    serve = effective_serve(tmp_path)
    for where, spec in pod_specs(rayservice()):
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        want = front_env(serve["proxy"], ROOT, loopback=False, max_message_bytes=grpc_message_bytes(serve))
        for key in (
            "RAY_SERVE_ENABLE_HA_PROXY",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED",
            "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH",
        ):
            got = env.get(key, {}).get("value", "0")
            assert got == want.get(key, "0"), f"{where}: {key}={got}, conf/serve proxy is {serve['proxy']}"
        token = env[serve["reload"]["token_env"]]["valueFrom"]["secretKeyRef"]
        assert token["name"] == "mycolens-credentials" and token["optional"] is True, where


def test_rayservice_serves_the_model_from_the_shared_volume():
    """The pods mount MYCOLENS_MODELS_DIR at /app/models, where serve/config.yaml's model folder resolves."""
    models = locations()["MYCOLENS_MODELS_DIR"]
    assert models.startswith(ARTIFACTS_MOUNT + "/")
    sub = models.removeprefix(ARTIFACTS_MOUNT + "/")
    for where, spec in pod_specs(rayservice()):
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["/app/models"]["subPath"] == sub and mounts["/app/models"]["readOnly"] is True, where
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
        }
        assert claims[mounts["/app/models"]["name"]] == "mycolens-artifacts", where
        if where == "head":  # copies and `ray job submit` drivers reach the values' paths there
            assert claims[mounts[ARTIFACTS_MOUNT]["name"]] == "mycolens-artifacts"
            assert "readOnly" not in mounts[ARTIFACTS_MOUNT]


# ---------------------------------------------------------------------------------------------------------------
# RayJobs: the project's own commands, composed by Hydra, fitting their clusters


def job(name: str, objs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return (objs or manifests())[f"RayJob/{name}"]


def check_locations(doc: dict[str, Any], cfg: Any) -> None:
    """Every path the job writes lies on the shared volume every pod of its cluster mounts."""
    for key in ("data_dir", "models_dir", "reports_dir", "log_dir"):
        assert str(cfg.paths[key]).startswith(ARTIFACTS_MOUNT + "/"), f"paths.{key}={cfg.paths[key]}"
    assert str(cfg.ray.storage_path).startswith(ARTIFACTS_MOUNT + "/") or "://" in str(cfg.ray.storage_path)
    for where, spec in pod_specs(doc):
        ray = spec["containers"][0]
        assert any(m["mountPath"] == ARTIFACTS_MOUNT for m in ray["volumeMounts"]), where
        refs = [e["configMapRef"]["name"] for e in ray.get("envFrom", []) if "configMapRef" in e]
        assert "mycolens-locations" in refs, f"{where}: the location values are not in the environment"


def test_train_job_composes_and_fits_its_cluster(tmp_path, monkeypatch):
    doc = job("mycolens-train")
    cfg = compose_entrypoint(doc["spec"]["entrypoint"], tmp_path, monkeypatch)
    assert cfg.trainer.engine == "ray" and cfg.ray.address == "auto"
    check_locations(doc, cfg)
    workers = cluster_spec(doc)["workerGroupSpecs"]
    per_worker = dict(cfg.trainer.resources_per_worker)
    cpus = sum(ray_cpus(g) * g["replicas"] for g in workers)
    assert cfg.trainer.num_workers * per_worker.get("CPU", 1) <= cpus, "Ray Train workers do not fit the cluster"
    fits = [g for g in workers if ray_cpus(g) >= per_worker.get("CPU", 1) and ray_gpus(g) >= per_worker.get("GPU", 0)]
    assert fits, "no worker pod is big enough for one Ray Train worker"


def test_sweep_job_composes_and_fits_its_cluster(tmp_path, monkeypatch):
    doc = job("mycolens-sweep")
    cfg = compose_entrypoint(doc["spec"]["entrypoint"], tmp_path, monkeypatch)
    assert cfg.ray.address == "auto"
    check_locations(doc, cfg)
    for key in ("storage_path", "experiment_file"):  # the image's /app is read-only and goes away with the pod
        assert str(cfg.sweep[key]).startswith(ARTIFACTS_MOUNT + "/"), f"sweep.{key}={cfg.sweep[key]}"
    (group,) = cluster_spec(doc)["workerGroupSpecs"]
    trial = dict(cfg.sweep.resources_per_trial)
    assert trial.get("CPU", 1) <= ray_cpus(group) and trial.get("GPU", 0) <= ray_gpus(group), "a trial must fit a pod"
    per_pod = min(ray_cpus(group) // trial.get("CPU", 1), ray_gpus(group) // trial["GPU"] if trial.get("GPU") else 1e9)
    assert cfg.sweep.max_concurrent_trials <= per_pod * group["maxReplicas"], "concurrent trials do not fit"
    if cfg.sweep.max_concurrent_trials > per_pod * group["minReplicas"]:
        assert cluster_spec(doc)["enableInTreeAutoscaling"] is True


# ---------------------------------------------------------------------------------------------------------------
# GPU overlay


def test_gpu_overlay_patches_existing_fields_and_asks_for_gpus(tmp_path, monkeypatch):
    folder = DEPLOY / "gpu"
    objs = overlay(folder)
    kz = kustomization(folder)
    (image,) = kz["images"]
    assert image["newTag"] == f"{project_version()}-cuda"
    for name, doc in objs.items():
        if doc["kind"] not in ("RayService", "RayJob"):
            continue
        for group in cluster_spec(doc)["workerGroupSpecs"]:
            assert ray_gpus(group) >= 1, f"{name}/{group['groupName']}: no GPU requested"
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), name
    cfg = compose_entrypoint(job("mycolens-train", objs)["spec"]["entrypoint"], tmp_path, monkeypatch)
    assert cfg.trainer.use_gpu is True and "mixed" in str(cfg.trainer.precision)
    gpu_yaml = yaml.safe_load((ROOT / "conf" / "trainer" / "gpu.yaml").read_text())
    assert cfg.trainer.precision == gpu_yaml["precision"] and cfg.trainer.deterministic == gpu_yaml["deterministic"]
    assert cfg.data.loader.pin_memory is True and cfg.data.loader.num_workers > 0
    sweep = compose_entrypoint(job("mycolens-sweep", objs)["spec"]["entrypoint"], tmp_path, monkeypatch)
    assert sweep.trainer.accelerator == "gpu" and "mixed" in str(sweep.trainer.precision)
    assert sweep.trainer.deterministic is not True and sweep.data.loader.pin_memory is True
    assert sweep.sweep.resources_per_trial["GPU"] == 1
    (sweep_group,) = cluster_spec(job("mycolens-sweep", objs))["workerGroupSpecs"]
    assert sweep.sweep.max_concurrent_trials <= ray_gpus(sweep_group) * sweep_group["maxReplicas"]
    gpu_groups = cluster_spec(job("mycolens-train", objs))["workerGroupSpecs"]
    assert cfg.trainer.resources_per_worker["GPU"] * cfg.trainer.num_workers <= sum(
        ray_gpus(g) * g["replicas"] for g in gpu_groups
    )


# ---------------------------------------------------------------------------------------------------------------
# Secrets, images


def files_to_scan() -> list[Path]:
    return [
        *DEPLOY.rglob("*.yaml"),
        DEPLOY / "Dockerfile",
        *WORKFLOWS.glob("*.yml"),
        ROOT / ".pre-commit-config.yaml",
        ROOT / ".dockerignore",
    ]


def test_no_manifest_contains_a_secret_value():
    for path in files_to_scan():
        text = path.read_text()
        for pattern in SECRET_VALUE:
            match = pattern.search(text)
            assert not match, f"{path.relative_to(ROOT)}: looks like a secret value: {match.group(0)[:12]}..."
    objs = {**manifests(), **overlay(DEPLOY / "gpu")}
    assert not of_kind("Secret", objs), "Secrets are created with kubectl, never kept in deploy/"
    for kz in (kustomization(), kustomization(DEPLOY / "gpu")):
        assert "secretGenerator" not in kz
        for gen in kz.get("configMapGenerator", []):
            for item in gen.get("literals", []):
                assert not SECRET_NAME.search(item.split("=")[0]), f"a credential in a ConfigMap: {item}"
    for where, c in containers(objs):
        for env in c.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), f"{where}: {env['name']}"
        for src in c.get("envFrom", []):
            assert set(src) <= {"configMapRef", "secretRef", "prefix"}, where


def test_images_agree_with_the_kustomization():
    (image,) = kustomization()["images"]
    assert image["newTag"] == project_version(), (
        "the image tag is the project version (pushed by image.yml on v<version>)"
    )
    expected = f"{image['newName']}:{image['newTag']}"
    objs = manifests()
    images = {c["image"] for _, c in containers(objs)}
    assert images == {expected}, f"manifests use {images}, kustomization says {expected}"
    (gpu,) = kustomization(DEPLOY / "gpu")["images"]
    assert gpu["name"] == image["name"] and gpu.get("newName", image["newName"]) == image["newName"]
    workflow = (WORKFLOWS / "image.yml").read_text()
    assert image["newName"].rsplit("/", 1)[1] in workflow and "-cuda" in workflow


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile, .dockerignore, CI, pre-commit


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_multistage_from_an_arg_base_with_the_lock_and_a_non_root_user():
    steps = dockerfile()
    first_from = next(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    global_args = dict(a.split("=", 1) for ins, a in steps[:first_from] if ins == "ARG" and "=" in a)
    assert "BASE_IMAGE" in global_args, "the base image (CPU or CUDA) is a build argument"
    base = global_args["BASE_IMAGE"]
    assert f":{locked('ray')}-py311" in base, f"the default base {base} should be Ray {locked('ray')} on Python 3.11"
    froms = [a for ins, a in steps if ins == "FROM"]
    python_stages = [a for a in froms if a.startswith("${BASE_IMAGE}")]
    assert len(python_stages) >= 2, "multi-stage, builder and runtime from BASE_IMAGE"
    assert set(froms) - set(python_stages) <= {"${NODE_IMAGE} AS web"}, "only the web stage has another base"
    runs = " ".join(a for ins, a in steps if ins == "RUN")
    assert "-r requirements.lock" in runs, "dependencies come from requirements.lock"
    assert any(ins == "COPY" and "requirements.lock" in a for ins, a in steps)
    # the last USER, with ARG defaults of its stage substituted, is not root
    last_stage = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    args = {**global_args, **dict(a.split("=", 1) for ins, a in last_stage if ins == "ARG" and "=" in a)}
    user = [a for ins, a in last_stage if ins == "USER"][-1]
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), user)
    assert user.split(":")[0] not in ("root", "0") and "$" not in user, f"final USER {user} must be a non-root user"
    cmd = [a for ins, a in steps if ins == "CMD"][-1]
    assert "serve/config.yaml" in cmd or "scripts/" in cmd, "the default command is one of the project's own"


def web_stage_run() -> str:
    """The shell command of the Dockerfile's web stage (ONNX Runtime Web for field mode)."""
    steps = dockerfile()
    start = steps.index(("FROM", "${NODE_IMAGE} AS web"))
    end = next(i for i in range(start + 1, len(steps)) if steps[i][0] == "FROM")
    (run,) = [a for ins, a in steps[start:end] if ins == "RUN"]
    return run


def test_the_image_carries_onnx_runtime_web_from_the_committed_lock():
    """Field mode's files come from serve/web/package-lock.json by `npm ci` in a stage of their own and land where the
    app serves them from (mycolens.serving.routes.field.ORT_DIST beside serve/static); the host's node_modules never
    enters the image."""
    from mycolens.serving.routes.field import ORT_DIST

    steps = dockerfile()
    assert ("COPY", "serve/web/package.json serve/web/package-lock.json ./") in steps
    assert web_stage_run().startswith("npm ci --omit=dev")
    copy = [a for ins, a in steps if ins == "COPY" and a.startswith("--from=web ")]
    assert copy == [f"--from=web /web/node_modules /app/serve/{ORT_DIST.parts[0]}/node_modules"], copy
    assert ORT_DIST.parts[:2] == ("web", "node_modules")
    assert "serve/web/node_modules" in (ROOT / ".dockerignore").read_text().splitlines()
    lock = json.loads((ROOT / "serve" / "web" / "package-lock.json").read_text())
    package = json.loads((ROOT / "serve" / "web" / "package.json").read_text())
    pinned = package["dependencies"]["onnxruntime-web"]
    assert (
        re.fullmatch(r"\d+\.\d+\.\d+", pinned) and lock["packages"]["node_modules/onnxruntime-web"]["version"] == pinned
    )


@pytest.mark.slow
def test_the_web_stage_command_installs_every_file_the_app_serves(tmp_path):
    """The web stage's own command on a copy of serve/web's package files (npm's cache serves what `make web`
    fetched): every ONNX Runtime Web file the app serves is there, and no dev tool."""
    import shutil
    import subprocess

    from mycolens.serving.routes.field import ORT_FILES

    npm = shutil.which("npm")
    assert npm is not None, "field mode needs node and npm on the machine (make web)"
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / "serve" / "web" / name, tmp_path / name)
    run = web_stage_run().replace("npm ci", "npm ci --prefer-offline", 1)
    done = subprocess.run(["bash", "-c", run], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    dist = tmp_path / "node_modules" / "onnxruntime-web" / "dist"
    assert all((dist / name).is_file() for name in ORT_FILES), sorted(p.name for p in dist.iterdir())
    assert not (tmp_path / "node_modules" / "eslint").exists()


def test_dockerignore_keeps_data_models_and_runs_out():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"data", "models", "logs", "reports", "outputs", "multirun", "dvclive", ".git", ".venv"} <= ignored
    assert not ignored & {"src", "conf", "scripts", "serve", "requirements.lock", "pyproject.toml"}


def workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads a bare `on` key as true
    return doc


def test_ci_runs_the_repo_script_fast_on_every_push_and_slow_on_main():
    ci = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    steps = [s for jobdef in ci["jobs"].values() for s in jobdef["steps"]]
    assert any(s.get("run", "").strip() == "bash .ci/run" for s in steps)
    fast = str(next(iter(ci["jobs"].values()))["env"]["MYCOLENS_FAST"])
    assert "refs/heads/main" in fast and "'0'" in fast and "'1'" in fast
    assert "MYCOLENS_FAST" in (ROOT / ".ci" / "run").read_text(), ".ci/run must honour MYCOLENS_FAST"


def test_image_workflow_builds_on_tags_with_build_push_action_and_no_inline_secret():
    wf = workflow("image.yml")
    assert any(t.startswith("v") for t in wf["on"]["push"]["tags"])
    steps = [s for jobdef in wf["jobs"].values() for s in jobdef["steps"]]
    (build,) = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["file"] == "deploy/Dockerfile" and "BASE_IMAGE=" in build["with"]["build-args"]
    for step in steps:
        for key, value in (step.get("with") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\{\s*secrets\.\w+\s*\}\}", str(value)), f"{key} must reference a secret"


def test_pre_commit_runs_ruff_check_and_format_at_the_locked_version():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = [r for r in config["repos"] if r["repo"].endswith("astral-sh/ruff-pre-commit")]
    assert repo["rev"] == f"v{locked('ruff')}"
    hooks = {h["id"] for h in repo["hooks"]}
    assert hooks & {"ruff-check", "ruff"} and "ruff-format" in hooks
