#!/usr/bin/env python3
"""Offline checks of steadfast's deployment assets: Dockerfile, k8s/, deploy/.

Run by scripts/validate-deploy.sh inside its venv (see
scripts/validate-deploy.requirements.txt), which passes the release binary
built by scripts/build-release.sh. Needs no cluster, no Docker engine and no
network. Every check is a hard failure; there is no skip switch.

    python3 scripts/validate_deploy.py --steadfast target/dist/steadfast
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent
YAML_DIRS = ["k8s", "deploy"]


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.verbose = False

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            if self.verbose:
                print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f"\n     {detail}" if detail else ""), flush=True)
        return ok

    def fail(self, what: str, detail: str = "") -> None:
        self.check(False, what, detail)


R = Report()


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def load_all(path: Path) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_one(path: Path):
    docs = load_all(path)
    if len(docs) != 1:
        raise ValueError(f"{rel(path)}: expected one YAML document, found {len(docs)}")
    return docs[0]


def addr_port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def steadfast_conf(text: str) -> dict:
    """A steadfast config with the defaults this script relies on filled in."""
    c = yaml.safe_load(text) or {}
    listen = c.get("listen") or {}
    server = c.get("server") or {}
    return {
        "raw": c,
        "proxy": listen.get("proxy", "127.0.0.1:8787"),
        "admin": listen.get("admin", "127.0.0.1:9090"),
        "pid_file": server.get("pid_file", "/tmp/steadfast.pid"),
        "upgrade_sock": server.get("upgrade_sock", "/tmp/steadfast-upgrade.sock"),
        "drain_s": server.get("drain_delay_ms", 5000) / 1000,
        "shutdown_s": server.get("shutdown_timeout_ms", 25000) / 1000,
        "key_envs": sorted({p["api_key_env"] for p in c.get("providers") or [] if p.get("api_key_env")}),
        "key_files": sorted({p["api_key_file"] for p in c.get("providers") or [] if p.get("api_key_file")}),
    }


def duration_s(v) -> float:
    """`40s`, `1m30s`, `45` (compose / systemd style)."""
    if isinstance(v, (int, float)):
        return float(v)
    total, s = 0.0, str(v).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|us|s|m|h)", s):
        total += float(num) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# --------------------------------------------------------------------------
# 1. Every YAML (and JSON) file under k8s/ and deploy/ parses.


def check_parse() -> None:
    files = []
    for d in YAML_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.is_file() and p.suffix in (".yaml", ".yml", ".json"):
                files.append(p)
    R.check(len(files) >= 10, "found the deployment YAML files", f"only {len(files)}")
    for p in files:
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            else:
                R.check(len(load_all(p)) > 0, f"{rel(p)} has a YAML document")
                continue
            R.check(True, rel(p))
        except Exception as e:  # noqa: BLE001
            R.fail(f"{rel(p)} parses", str(e))


# --------------------------------------------------------------------------
# 2. Kubernetes objects: schemas (kubernetes-validate, strict: unknown
#    fields are errors), the PodMonitor against its CRD model, kustomize
#    rendering.


def is_k8s_object(d) -> bool:
    return isinstance(d, dict) and "apiVersion" in d and "kind" in d


def pod_spec(obj: dict):
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("spec")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    return None


def all_containers(spec: dict) -> list:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def min_k8s_version(obj: dict) -> str:
    spec = pod_spec(obj)
    if spec and any(c.get("restartPolicy") == "Always" for c in spec.get("initContainers") or []):
        return "1.29"  # native sidecars: beta and on by default from 1.29
    return "1.25"  # the oldest schema kubernetes-validate bundles


def unknown_fields(given, dumped, path="") -> list:
    """Keys present in the input that a typed model dropped (= unknown)."""
    out = []
    if isinstance(given, dict):
        d = dumped if isinstance(dumped, dict) else {}
        for k, v in given.items():
            if k not in d:
                out.append(f"{path}.{k}".lstrip("."))
            else:
                out += unknown_fields(v, d[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(dumped, list):
        for i, (g, dd) in enumerate(zip(given, dumped)):
            out += unknown_fields(g, dd, f"{path}[{i}]")
    return out


def validate_podmonitor(obj: dict, where: str) -> None:
    from cloudcoil.models.prometheus_operator.v1 import PodMonitor

    try:
        model = PodMonitor.model_validate(obj)
    except Exception as e:  # noqa: BLE001
        R.fail(f"{where}: PodMonitor/{obj['metadata']['name']} matches the CRD model", str(e))
        return
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = unknown_fields(obj, dumped)
    R.check(not unknown, f"{where}: PodMonitor/{obj['metadata']['name']} has no unknown fields", ", ".join(unknown))
    eps = (obj.get("spec") or {}).get("podMetricsEndpoints") or []
    R.check(bool(eps), f"{where}: PodMonitor has podMetricsEndpoints")
    R.check(bool(((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")), f"{where}: PodMonitor selects by label")


def validate_k8s_object(obj: dict, where: str) -> None:
    import kubernetes_validate
    from kubernetes_validate import utils as kv

    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    if obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "PodMonitor":
        validate_podmonitor(obj, where)
        return
    for version in (min_k8s_version(obj), kv.latest_version()):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            R.check(True, f"{where}: {name} @ {version}")
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            R.fail(f"{where}: {name} validates against Kubernetes {version} (strict)", f"{path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            R.fail(f"{where}: {name} has a schema", e.message)


def check_k8s_files() -> None:
    for p in sorted((ROOT / "k8s").rglob("*.yaml")):
        if p.name == "kustomization.yaml":
            continue
        docs = load_all(p)
        R.check(all(is_k8s_object(d) for d in docs), f"{rel(p)} holds only Kubernetes objects")
        for d in docs:
            if is_k8s_object(d):
                validate_k8s_object(d, rel(p))


KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "images"}


def render_kustomization(directory: Path, seen=None) -> list:
    """Minimal `kustomize build`: resources (files and directories), namespace,
    images. Any other field fails the check rather than being ignored."""
    seen = set() if seen is None else seen
    directory = directory.resolve()
    if directory in seen:
        raise ValueError(f"{rel(directory)}: kustomization cycle")
    seen.add(directory)
    kfile = directory / "kustomization.yaml"
    k = load_one(kfile)
    extra = set(k) - KUSTOMIZE_KEYS
    if extra:
        raise ValueError(f"{rel(kfile)}: fields {sorted(extra)} are not supported by the offline renderer in {rel(Path(__file__))}")
    if k.get("kind") != "Kustomization":
        raise ValueError(f"{rel(kfile)}: kind must be Kustomization")
    objs = []
    for r in k.get("resources") or []:
        target = (directory / r).resolve()
        if target.is_dir():
            if not (target / "kustomization.yaml").is_file():
                raise ValueError(f"{rel(kfile)}: resource {r} is a directory without kustomization.yaml")
            objs += render_kustomization(target, seen)
        elif target.is_file():
            if not str(target).startswith(str(directory) + os.sep):
                raise ValueError(f"{rel(kfile)}: file resource {r} is outside the kustomization root (kustomize refuses it)")
            objs += [d for d in load_all(target) if d]
        else:
            raise ValueError(f"{rel(kfile)}: resource {r} does not exist")
    if k.get("namespace"):
        for o in objs:
            o.setdefault("metadata", {})["namespace"] = k["namespace"]
    for img in k.get("images") or []:
        for o in objs:
            spec = pod_spec(o)
            for c in all_containers(spec) if spec else []:
                ref = c.get("image", "")
                base = re.split(r"[@]", ref)[0]
                if ":" in base.rsplit("/", 1)[-1]:
                    base = base[: base.rfind(":")]
                if base != img["name"]:
                    continue
                new = img.get("newName", base)
                if img.get("digest"):
                    c["image"] = f"{new}@{img['digest']}"
                elif img.get("newTag"):
                    c["image"] = f"{new}:{img['newTag']}"
                else:
                    c["image"] = new + ref[len(base):]
    ids = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    dups = {i for i in ids if ids.count(i) > 1}
    if dups:
        raise ValueError(f"{rel(kfile)}: duplicate objects {sorted(dups)}")
    return objs


def normalize(objs: list) -> list:
    return sorted((yaml.safe_dump(o, sort_keys=True) for o in objs))


def check_kustomizations() -> dict:
    rendered = {}
    kubectl = shutil.which("kubectl")
    for kfile in sorted((ROOT / "k8s").rglob("kustomization.yaml")):
        d = kfile.parent
        try:
            objs = render_kustomization(d)
        except Exception as e:  # noqa: BLE001
            R.fail(f"{rel(d)}: kustomization renders", str(e))
            continue
        R.check(len(objs) > 0, f"{rel(d)}: kustomization renders objects")
        rendered[rel(d)] = objs
        for o in objs:
            validate_k8s_object(copy.deepcopy(o), f"kustomize {rel(d)}")
        if kubectl:
            # Where kubectl is installed, its embedded kustomize must agree.
            out = subprocess.run([kubectl, "kustomize", str(d)], capture_output=True, text=True)
            if R.check(out.returncode == 0, f"{rel(d)}: kubectl kustomize", out.stderr.strip()):
                theirs = [o for o in yaml.safe_load_all(out.stdout) if o]
                R.check(normalize(theirs) == normalize(objs), f"{rel(d)}: offline rendering equals kubectl kustomize")
    R.check("k8s" in rendered and "k8s/classic-sidecar" in rendered, "both sidecar variants render")
    return rendered


def check_k8s_wiring(rendered: dict) -> None:
    """Cross-references inside each rendered variant."""
    secret = load_one(ROOT / "k8s/secret.yaml")
    secret_keys = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
    for variant, objs in rendered.items():
        deps = [o for o in objs if o["kind"] == "Deployment"]
        if not deps:
            continue
        cms = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
        pms = [o for o in objs if o["kind"] == "PodMonitor"]
        for dep in deps:
            where = f"{variant}: Deployment/{dep['metadata']['name']}"
            tmpl = dep["spec"]["template"]
            spec = tmpl["spec"]
            sc = [c for c in all_containers(spec) if c["name"] == "steadfast"]
            if not R.check(len(sc) == 1, f"{where}: has one steadfast container"):
                continue
            c = sc[0]
            native = c in (spec.get("initContainers") or [])
            classic = variant == "k8s/classic-sidecar"
            R.check(native != classic, f"{where}: steadfast is {'a classic' if classic else 'a native'} sidecar")
            if native:
                R.check(c.get("restartPolicy") == "Always", f"{where}: native sidecar has restartPolicy Always")
            else:
                R.check(spec["containers"][0]["name"] == "steadfast", f"{where}: classic sidecar is the first container (postStart ordering)")
                hook = ((c.get("lifecycle") or {}).get("postStart") or {}).get("exec", {}).get("command", [])
                R.check("--wait-ready" in hook, f"{where}: postStart waits for /ready", str(hook))
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            cfg_path = env.get("STEADFAST_CONFIG", "/etc/steadfast/steadfast.yaml")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            vols = {v["name"]: v for v in spec.get("volumes") or []}
            cfg_dir = str(Path(cfg_path).parent)
            m = mounts.get(cfg_dir)
            if not R.check(m is not None, f"{where}: config directory {cfg_dir} is mounted", "mount the ConfigMap as a directory: subPath mounts never see updates"):
                continue
            R.check("subPath" not in m, f"{where}: config is not a subPath mount (hot reload needs the directory)")
            cm_name = vols[m["name"]]["configMap"]["name"]
            cm = cms.get(cm_name)
            if not R.check(cm is not None, f"{where}: ConfigMap {cm_name} is part of the variant"):
                continue
            conf = steadfast_conf(cm["data"][Path(cfg_path).name])
            run_dir = str(Path(conf["pid_file"]).parent)
            R.check(str(Path(conf["upgrade_sock"]).parent) == run_dir, f"{where}: pid file and upgrade socket share one directory")
            rm = mounts.get(run_dir)
            R.check(rm is not None and "emptyDir" in vols.get(rm["name"], {}), f"{where}: {run_dir} is a writable emptyDir")
            R.check(conf["proxy"].startswith("127.0.0.1:"), f"{where}: proxy listens on loopback only (the keys stay in the pod)")
            R.check(conf["admin"].startswith("0.0.0.0:"), f"{where}: admin listens on all interfaces (probes, Prometheus)")
            sname = secret["metadata"]["name"]
            R.check(bool(conf["key_envs"] or conf["key_files"]), f"{where}: the config takes its keys from Secret {sname}")
            if conf["key_envs"]:
                refs = [e["secretRef"]["name"] for e in c.get("envFrom") or [] if "secretRef" in e]
                R.check(refs == [sname], f"{where}: key variables come from Secret {sname}", str(refs))
                missing = set(conf["key_envs"]) - secret_keys
                R.check(not missing, f"{where}: the Secret provides every api_key_env", str(sorted(missing)))
            secret_vols = {n for n, v in vols.items() if (v.get("secret") or {}).get("secretName") == sname}
            for f in conf["key_files"]:
                d = str(Path(f).parent)
                km = mounts.get(d)
                R.check(
                    km is not None and km["name"] in secret_vols and "subPath" not in km,
                    f"{where}: {f} is in Secret {sname}, mounted as a directory at {d}",
                    "mount the Secret as a directory: subPath mounts never see a rotated key",
                )
                R.check(Path(f).name in secret_keys, f"{where}: the Secret provides {Path(f).name} (api_key_file {f})")
            scx = c.get("securityContext") or {}
            for key, want in [("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)]:
                R.check(scx.get(key) == want, f"{where}: steadfast securityContext.{key} = {want}")
            R.check((scx.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: steadfast drops ALL capabilities")
            for cc in all_containers(spec):
                s = {**(spec.get("securityContext") or {}), **(cc.get("securityContext") or {})}
                ok = (
                    s.get("runAsNonRoot") is True
                    and s.get("allowPrivilegeEscalation") is False
                    and (s.get("capabilities") or {}).get("drop") == ["ALL"]
                    and (s.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
                )
                R.check(ok, f"{where}: container {cc['name']} meets the restricted Pod Security Standard")
                res = cc.get("resources") or {}
                R.check("requests" in res and "memory" in res.get("limits", {}), f"{where}: container {cc['name']} sets requests and a memory limit")
            ann = tmpl["metadata"].get("annotations") or {}
            R.check(ann.get("prometheus.io/scrape") == "true", f"{where}: prometheus.io/scrape annotation")
            R.check(ann.get("prometheus.io/port") == str(addr_port(conf["admin"])), f"{where}: prometheus.io/port is the admin port")
            R.check(ann.get("prometheus.io/path") == "/metrics", f"{where}: prometheus.io/path is /metrics")
            labels = tmpl["metadata"].get("labels") or {}
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            for pm in pms:
                sel = pm["spec"]["selector"].get("matchLabels") or {}
                R.check(all(labels.get(k) == v for k, v in sel.items()), f"{where}: PodMonitor/{pm['metadata']['name']} selects the pods")
                for ep in pm["spec"]["podMetricsEndpoints"]:
                    R.check(ports.get(ep.get("port")) == addr_port(conf["admin"]), f"{where}: PodMonitor port {ep.get('port')!r} is the admin port")
                    R.check(ep.get("path", "/metrics") == "/metrics", f"{where}: PodMonitor path is /metrics")


# --------------------------------------------------------------------------
# 3. The configs steadfast would run with pass `steadfast check`, with
#    exactly the key variables the deployment provides.


def run_check(binary: str, config_text: str, env_keys, what: str, secret_files=()) -> None:
    """`steadfast check` with exactly `env_keys` set, and the key files the
    config names that `secret_files` (file names, as a Secret volume holds
    them) provides written as dummies, the config pointed at them."""
    with tempfile.TemporaryDirectory() as td:
        vol = Path(td) / "secret-volume"
        vol.mkdir()
        for f in steadfast_conf(config_text)["key_files"]:
            if Path(f).name in secret_files:
                (vol / Path(f).name).write_text("dummy-value\n")
                config_text = config_text.replace(f, str(vol / Path(f).name))
        cfg = Path(td) / "steadfast.yaml"
        cfg.write_text(config_text)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update({k: "dummy-value" for k in env_keys})
        out = subprocess.run([binary, "check", "-c", str(cfg)], capture_output=True, text=True, env=env, cwd=td)
        R.check(out.returncode == 0, f"steadfast check: {what}", (out.stdout + out.stderr).strip())


def env_file_keys(path: Path) -> list:
    keys = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            keys.append(line.split("=", 1)[0].strip())
    return keys


def check_configs(binary: str, rendered: dict) -> None:
    secret = load_one(ROOT / "k8s/secret.yaml")
    secret_keys = list((secret.get("stringData") or {}).keys()) + list((secret.get("data") or {}).keys())
    n = 0
    for variant, objs in rendered.items():
        for o in objs:
            if o["kind"] == "ConfigMap":
                for key, text in (o.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        run_check(binary, text, secret_keys, f"{variant} ConfigMap/{o['metadata']['name']} {key} with the Secret's keys", secret_keys)
                        n += 1
    R.check(n > 0, "found the ConfigMap config")
    # The image's own config starts without any secret.
    run_check(binary, (ROOT / "deploy/docker/steadfast.yaml").read_text(), [], "deploy/docker/steadfast.yaml with no keys at all")
    run_check(
        binary,
        (ROOT / "deploy/systemd/steadfast.yaml").read_text(),
        env_file_keys(ROOT / "deploy/systemd/steadfast.env.example"),
        "deploy/systemd/steadfast.yaml with the keys of steadfast.env.example",
    )
    compose = load_one(ROOT / "deploy/docker-compose/compose.yaml")
    env = list((compose["services"]["steadfast"].get("environment") or {}).keys())
    run_check(binary, (ROOT / "deploy/docker-compose/config/steadfast.yaml").read_text(), env, "docker-compose config with the keys compose passes")
    R.check(
        set(env) <= set(env_file_keys(ROOT / "deploy/docker-compose/.env.example")),
        "deploy/docker-compose/.env.example lists every key compose needs",
    )
    # The release binary is the version the crate declares.
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    R.check(version in out.stdout, f"release binary reports version {version}", out.stdout)


# --------------------------------------------------------------------------
# 4. docker compose: the compose-spec schema, and its wiring.


def check_compose() -> None:
    d = ROOT / "deploy/docker-compose"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(d / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    R.check(out.returncode == 0, "compose.yaml validates against the compose-spec schema", (out.stdout + out.stderr).strip())
    c = load_one(d / "compose.yaml")
    s = c["services"]["steadfast"]
    build = s.get("build") or {}
    ctx = (d / build.get("context", ".")).resolve()
    R.check((ctx / build.get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile", "compose builds the repository's Dockerfile")
    for name, svc in c["services"].items():
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                R.check((d / src).exists(), f"compose {name}: bind mount source {src} exists")
    mounts = {v.split(":")[1]: (d / v.split(":")[0]) for v in s["volumes"]}
    cfg_dir = mounts.get("/etc/steadfast")
    if not R.check(cfg_dir is not None and cfg_dir.is_dir(), "compose mounts a config directory at /etc/steadfast"):
        return
    conf = steadfast_conf((cfg_dir / "steadfast.yaml").read_text())
    R.check(s.get("read_only") is True, "compose: steadfast runs with a read-only root filesystem")
    R.check(str(Path(conf["pid_file"]).parent) in (s.get("tmpfs") or []), "compose: the pid file directory is a tmpfs")
    R.check("ALL" in (s.get("cap_drop") or []), "compose: steadfast drops all capabilities")
    need = conf["drain_s"] + conf["shutdown_s"]
    R.check(duration_s(s.get("stop_grace_period", "10s")) > need, f"compose: stop_grace_period covers the {need:g} s drain")
    R.check(set(conf["key_envs"]) <= set((s.get("environment") or {}).keys()), "compose passes every api_key_env")
    published = {p.split(":")[-1] for p in s.get("ports") or []}
    R.check({str(addr_port(conf["proxy"])), str(addr_port(conf["admin"]))} == published, "compose publishes the proxy and admin ports")
    R.check(all(p.startswith("127.0.0.1:") for p in s.get("ports") or []), "compose publishes steadfast on the host's loopback only")
    R.check(conf["proxy"].startswith("0.0.0.0:") and conf["admin"].startswith("0.0.0.0:"), "compose config listens on 0.0.0.0 (reachable on the compose network)")
    # Prometheus scrapes steadfast's admin port, with the job name the alerts use.
    prom = load_one(d / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    job = jobs.get("steadfast")
    if R.check(job is not None, "prometheus.yml has job steadfast (the alerts select job=\"steadfast\")"):
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        R.check(targets == [f"steadfast:{addr_port(conf['admin'])}"], "prometheus scrapes steadfast's admin port", str(targets))
        R.check(job.get("metrics_path", "/metrics") == "/metrics", "prometheus scrapes /metrics")
    pmounts = {v.split(":")[1]: v.split(":")[0] for v in c["services"]["prometheus"]["volumes"]}
    for rf in prom.get("rule_files") or []:
        R.check(rf in pmounts, f"prometheus rule file {rf} is mounted")
    R.check(pmounts.get("/etc/prometheus/rules/steadfast-alerts.yaml") == "../monitoring/steadfast-alerts.yaml", "prometheus loads deploy/monitoring/steadfast-alerts.yaml")
    g = c["services"].get("grafana")
    if R.check(g is not None, "compose has the optional grafana service"):
        gm = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
        R.check(gm.get("/var/lib/grafana/dashboards/steadfast-dashboard.json") == "../monitoring/steadfast-dashboard.json", "grafana mounts deploy/monitoring/steadfast-dashboard.json")
        prov = load_one(d / "grafana/provisioning/dashboards/steadfast.yaml")
        R.check(prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards", "grafana dashboard provider reads the mounted directory")
        ds = load_one(d / "grafana/provisioning/datasources/prometheus.yaml")
        R.check(urlparse(ds["datasources"][0]["url"]).hostname == "prometheus", "grafana's datasource is the compose prometheus")


# --------------------------------------------------------------------------
# 5. systemd unit: directives, consistency with its config, systemd-analyze.


def parse_unit(path: Path) -> dict:
    sections: dict = {}
    cur = None
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        k, v = line.split("=", 1)
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def check_systemd(binary: str) -> None:
    d = ROOT / "deploy/systemd"
    unit = parse_unit(d / "steadfast.service")
    svc = unit.get("Service", {})
    one = lambda k: (svc.get(k) or [None])[-1]  # noqa: E731
    conf = steadfast_conf((d / "steadfast.yaml").read_text())
    env = dict(e.split("=", 1) for e in svc.get("Environment", []))
    R.check(one("Type") in ("simple", "exec", "forking"), "unit: Type is simple/exec/forking")
    R.check(one("PIDFile") == conf["pid_file"], "unit: PIDFile= is the config's server.pid_file (systemd follows the upgrade through it)", f"{one('PIDFile')} vs {conf['pid_file']}")
    R.check(env.get("STEADFAST_PID_FILE") == conf["pid_file"], "unit: STEADFAST_PID_FILE is server.pid_file")
    R.check(env.get("STEADFAST_UPGRADE_SOCK") == conf["upgrade_sock"], "unit: STEADFAST_UPGRADE_SOCK is server.upgrade_sock")
    rd = one("RuntimeDirectory")
    run_dir = f"/run/{rd}"
    R.check(str(Path(conf["pid_file"]).parent) == run_dir and str(Path(conf["upgrade_sock"]).parent) == run_dir, f"unit: pid file and upgrade socket live in RuntimeDirectory {run_dir}")
    ready = urlparse(env.get("STEADFAST_READY_URL", ""))
    R.check(ready.path == "/ready" and ready.port == addr_port(conf["admin"]), "unit: STEADFAST_READY_URL is /ready on the admin port")
    R.check(Path(env.get("STEADFAST_CONFIG", "")).name == "steadfast.yaml", "unit: STEADFAST_CONFIG names the installed steadfast.yaml")
    pre = " ".join(svc.get("ExecStartPre", []))
    R.check(re.search(r"/steadfast check\b", pre) is not None, "unit: ExecStartPre= runs steadfast check", pre)
    R.check(any("steadfast-upgrade" in x and "--wait-ready" not in x for x in svc.get("ExecReload", [])), "unit: ExecReload= performs the fd-handoff upgrade (steadfast-upgrade)")
    R.check(one("ExecStart") is not None and one("ExecStart").endswith("steadfast serve"), "unit: ExecStart= runs steadfast serve in the foreground")
    R.check(one("KillMode") in (None, "control-group"), "unit: KillMode=control-group (a process still draining after an upgrade drains too)")
    need = conf["drain_s"] + conf["shutdown_s"]
    R.check(duration_s(one("TimeoutStopSec") or "90") > need, f"unit: TimeoutStopSec covers the {need:g} s drain")
    for k, v in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ]:
        R.check(one(k) == v, f"unit: {k}={v}")
    R.check(bool(svc.get("EnvironmentFile")), "unit: keys come from an EnvironmentFile")
    # systemd's own parser, with the install paths pointed at real files.
    sa = shutil.which("systemd-analyze")
    if not R.check(sa is not None, "systemd-analyze is installed (scripts/validate-deploy.sh installs it)"):
        return
    with tempfile.TemporaryDirectory() as td:
        text = (d / "steadfast.service").read_text()
        envf = Path(td) / "steadfast.env"
        shutil.copy(d / "steadfast.env.example", envf)
        text = text.replace("/usr/local/bin/steadfast-upgrade", str(ROOT / "deploy/bin/steadfast-upgrade"))
        text = text.replace("/usr/local/bin/steadfast ", str(Path(binary).resolve()) + " ")
        text = text.replace("EnvironmentFile=/etc/steadfast/steadfast.env", f"EnvironmentFile={envf}")
        u = Path(td) / "steadfast.service"
        u.write_text(text)
        out = subprocess.run([sa, "verify", "--man=no", str(u)], capture_output=True, text=True)
        msgs = [m for m in (out.stdout + out.stderr).splitlines() if m.strip()]
        R.check(out.returncode == 0 and not msgs, "systemd-analyze verify steadfast.service (no error, no warning)", "\n     ".join(msgs))


# --------------------------------------------------------------------------
# 6. Dockerfile: structure, wiring to the image config, hadolint.


def dockerfile_instructions(path: Path) -> list:
    out = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def json_or_shell(arg: str) -> list:
    arg = arg.strip()
    if arg.startswith("["):
        return json.loads(arg)
    return ["/bin/sh", "-c", arg]


def dockerignore_regex(pattern: str) -> str:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch))
        i += 1
    return out


def dockerignore_excludes(path: str, patterns: list) -> bool:
    """Whether the build context leaves `path` out (a pattern matching a
    parent directory excludes everything below it; later `!` lines re-include)."""
    excluded = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pat in patterns:
        neg = pat.startswith("!")
        regex = dockerignore_regex(os.path.normpath(pat.lstrip("!").strip("/")))
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not neg
    return excluded


def check_dockerfile(venv_bin: Path) -> None:
    ins = dockerfile_instructions(ROOT / "Dockerfile")
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for w, rest in ins if w == "ARG" and "=" in rest}
    stages, cur = [], None
    for w, rest in ins:
        if w == "FROM":
            image = rest.split()[0]
            for k, v in args.items():
                image = image.replace("${%s}" % k, v)
            m = re.search(r"\s+AS\s+(\S+)", rest, re.I)
            cur = {"image": image, "name": m.group(1) if m else None, "ins": []}
            stages.append(cur)
        elif cur is not None:
            cur["ins"].append((w, rest))
    if not R.check(len(stages) >= 2, "Dockerfile is multi-stage"):
        return
    build, runtime = stages[0], stages[-1]
    for s in stages:
        R.check(":" in s["image"] and not s["image"].endswith(":latest"), f"Dockerfile: base image {s['image']} is pinned to a tag")
    R.check("slim" in runtime["image"] and "debian" in runtime["image"], "Dockerfile: runtime stage is Debian slim")
    runs = [r for w, r in build["ins"] if w == "RUN"]
    builds = [r for r in runs if re.search(r"(^|\s)scripts/build-release\.sh(\s|$)", r)]
    R.check(len(builds) == 1, "Dockerfile: the build stage runs scripts/build-release.sh (the script CI runs)", "\n".join(runs))
    outdir = builds[0].split("scripts/build-release.sh", 1)[1].split()[0] if builds else None
    R.check(all("cargo " not in r for r in runs), "Dockerfile: no cargo command besides the shared script")
    copies = [r for w, r in runtime["ins"] if w == "COPY"]
    from_build = [r for r in copies if r.startswith(f"--from={build['name']}")]
    R.check(any(f"{outdir}/steadfast" in r for r in from_build), "Dockerfile: runtime copies the binary the script built")
    env = {}
    for w, r in runtime["ins"]:
        if w == "ENV":
            for tok in shlex.split(r):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    env[k] = v
    dests = {}
    for r in copies:
        if r.startswith("--from="):
            continue
        toks = [t for t in r.split() if not t.startswith("--")]
        for src in toks[:-1]:
            dests[src] = toks[-1]
    conf_dest = dests.get("deploy/docker/steadfast.yaml")
    R.check(conf_dest is not None and env.get("STEADFAST_CONFIG") == conf_dest, "Dockerfile: STEADFAST_CONFIG is where the image config is copied", f"{env.get('STEADFAST_CONFIG')} vs {conf_dest}")
    conf = steadfast_conf((ROOT / "deploy/docker/steadfast.yaml").read_text())
    R.check(env.get("STEADFAST_PID_FILE") == conf["pid_file"] and env.get("STEADFAST_UPGRADE_SOCK") == conf["upgrade_sock"], "Dockerfile: ENV pid file / upgrade socket match the image config")
    apt = " ".join(r for w, r in runtime["ins"] if w == "RUN" and "apt-get install" in r)
    for pkg in ("ca-certificates", "tini"):
        R.check(re.search(rf"\b{pkg}\b", apt) is not None, f"Dockerfile: runtime installs {pkg}")
    R.check("--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists" in apt, "Dockerfile: lean apt-get install")
    users = [r for w, r in runtime["ins"] if w == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    R.check(uid.isdigit() and int(uid) > 0, "Dockerfile: runs as a numeric non-root UID (runAsNonRoot can verify it)", str(users))
    for variant in ("k8s/deployment.yaml", "k8s/classic-sidecar/deployment.yaml"):
        dep = load_one(ROOT / variant)
        c = [c for c in all_containers(dep["spec"]["template"]["spec"]) if c["name"] == "steadfast"][0]
        R.check(str(c["securityContext"].get("runAsUser")) == uid, f"{variant}: runAsUser is the image's UID {uid}")
    vols = [v for w, r in runtime["ins"] if w == "VOLUME" for v in (json.loads(r) if r.startswith("[") else r.split())]
    run_dir = str(Path(conf["pid_file"]).parent)
    R.check(run_dir in vols, f"Dockerfile: VOLUME {run_dir} (writable under a read-only root)", str(vols))
    expose = {p.split("/")[0] for w, r in runtime["ins"] if w == "EXPOSE" for p in r.split()}
    R.check(expose == {str(addr_port(conf["proxy"])), str(addr_port(conf["admin"]))}, "Dockerfile: EXPOSE the proxy and admin ports of the image config", str(expose))
    R.check([r for w, r in runtime["ins"] if w == "STOPSIGNAL"] == ["SIGTERM"], "Dockerfile: STOPSIGNAL SIGTERM")
    hc = [r for w, r in runtime["ins"] if w == "HEALTHCHECK"]
    if R.check(len(hc) == 1 and " CMD " in f" {hc[0]} ", "Dockerfile: one HEALTHCHECK CMD"):
        cmd = json_or_shell(hc[0].split("CMD", 1)[1])
        R.check(cmd[:2] == ["/usr/local/bin/steadfast", "healthcheck"], "Dockerfile: HEALTHCHECK runs steadfast healthcheck (exec form)", str(cmd))
        url = urlparse(cmd[cmd.index("--url") + 1]) if "--url" in cmd else urlparse("http://127.0.0.1:9090/health")
        R.check(url.port == addr_port(conf["admin"]) and url.path == "/health", "Dockerfile: HEALTHCHECK targets /health on the image config's admin port")
    ep = json_or_shell([r for w, r in runtime["ins"] if w == "ENTRYPOINT"][-1])
    R.check(ep[0].endswith("/tini") and "--" in ep, "Dockerfile: tini is PID 1", str(ep))
    entry_dir = dests.get("deploy/bin/steadfast-entrypoint", "").rstrip("/")
    R.check(ep[-1] == f"{entry_dir}/steadfast-entrypoint", "Dockerfile: tini runs the copied steadfast-entrypoint (survives an in-container upgrade)", str(ep))
    R.check(dests.get("deploy/bin/steadfast-upgrade", "").rstrip("/") == entry_dir, "Dockerfile: steadfast-upgrade is installed beside it")
    # The build context keeps everything COPY needs.
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.strip().startswith("#")]
    for src in dests:
        if src == ".":
            continue
        R.check((ROOT / src).exists(), f"Dockerfile: COPY source {src} exists")
        R.check(not dockerignore_excludes(src, ignore), f"Dockerfile: COPY source {src} is not excluded by .dockerignore")
    for needed in ("Cargo.toml", "Cargo.lock", "src/main.rs", "scripts/build-release.sh"):
        R.check(not dockerignore_excludes(needed, ignore), f".dockerignore keeps {needed} in the build context")
    for heavy in ("target", ".git", "deploy/docker-compose/.env"):
        R.check(dockerignore_excludes(heavy, ignore), f".dockerignore excludes {heavy}")
    hl = venv_bin / "hadolint"
    out = subprocess.run([str(hl), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    R.check(out.returncode == 0, "hadolint Dockerfile", (out.stdout + out.stderr).strip())


# --------------------------------------------------------------------------
# 7. Shell scripts: syntax and shellcheck.


def check_shell(venv_bin: Path) -> None:
    scripts = sorted((ROOT / "deploy/bin").iterdir()) + sorted((ROOT / "deploy/systemd").glob("*.sh"))
    scripts += [ROOT / "scripts/build-release.sh", ROOT / "scripts/validate-deploy.sh"]
    for s in scripts:
        R.check(os.access(s, os.X_OK), f"{rel(s)} is executable")
        shell = "sh" if s.read_text().startswith("#!/bin/sh") else "bash"
        out = subprocess.run([shell, "-n", str(s)], capture_output=True, text=True)
        R.check(out.returncode == 0, f"{shell} -n {rel(s)}", out.stderr.strip())
    out = subprocess.run([str(venv_bin / "shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    R.check(out.returncode == 0, "shellcheck " + " ".join(rel(x) for x in scripts), out.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steadfast", required=True, help="the release binary (scripts/build-release.sh)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every check, not only failures")
    a = ap.parse_args()
    R.verbose = a.verbose
    a.steadfast = str(Path(a.steadfast).resolve())
    venv_bin = Path(sys.executable).parent
    check_parse()
    check_k8s_files()
    rendered = check_kustomizations()
    check_k8s_wiring(rendered)
    check_configs(a.steadfast, rendered)
    check_compose()
    check_systemd(a.steadfast)
    check_dockerfile(venv_bin)
    check_shell(venv_bin)
    print(f"deploy: {R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
