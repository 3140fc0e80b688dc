#!/usr/bin/env python3
"""Render and check the Kubernetes package (run by controller/tests/deploy_files.rs).

    python3 deploy/kubernetes/check.py [--out DIR]

For the base and every overlay: `kubectl kustomize` renders it,
`kubernetes-validate --strict` checks every built-in kind against the
Kubernetes schemas (custom resources, e.g. ServiceMonitor, are only
rendered), and the properties below are asserted. The agent's init script
is run as written, with the rendered ConfigMap, for a node with its own
file and one without. With --out, the agent and controller configurations
it produced are written there (node name in the file name) for
`check-config`.
"""
import argparse
import copy
import pathlib
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ALERTS = HERE / "../monitoring/trireme-alerts.yml"


def fail(msg):
    sys.exit(f"check.py: {msg}")


def render(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubectl kustomize {path}: {out.stderr}")
    return out.stdout


def validate(name, text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        out = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", f.name], capture_output=True, text=True
        )
    if out.returncode != 0:
        fail(f"kubernetes-validate {name}: {out.stdout}{out.stderr}")


def containers(pod):
    return pod.get("initContainers", []) + pod["containers"]


def check(name, docs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    ns = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in by_kind["Namespace"]}
    if ns.get("trireme", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        fail(f"{name}: namespace trireme must enforce Pod Security 'restricted': {ns}")
    if "pod-security.kubernetes.io/enforce" not in ns.get("trireme-agents", {}):
        fail(f"{name}: namespace trireme-agents has no Pod Security label")
    (ds,) = by_kind["DaemonSet"]
    (sts,) = by_kind["StatefulSet"]
    if sts["spec"]["replicas"] != 1:
        fail(f"{name}: the controller must have one replica (one catalog)")
    headless = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"
                and s["metadata"]["name"] == sts["spec"]["serviceName"]]
    if not headless:
        fail(f"{name}: no headless Service named {sts['spec']['serviceName']} for the StatefulSet")
    for w in (ds, sts):
        pod = w["spec"]["template"]["spec"]
        for c in containers(pod):
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1] and "@sha256:" not in image:
                fail(f"{name}: {w['metadata']['name']}/{c['name']} image {image} has no tag")
            if image.endswith(":latest"):
                fail(f"{name}: {w['metadata']['name']}/{c['name']} uses :latest")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
                fail(f"{name}: {c['name']} may escalate privileges")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(f"{name}: {c['name']} does not drop ALL capabilities")
        main = pod["containers"][0]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if "httpGet" not in main.get(probe, {}):
                fail(f"{name}: {w['metadata']['name']} has no HTTP {probe}")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{name}: {w['metadata']['name']} mounts a service account token it does not use")
    pod = ds["spec"]["template"]["spec"]
    if "trireme.io/agent" not in pod.get("nodeSelector", {}):
        fail(f"{name}: the agent DaemonSet runs on nodes that have no identity (no nodeSelector)")
    tls = [v for v in pod["volumes"] if v["name"] == "tls"]
    if not tls or "hostPath" not in tls[0]:
        fail(f"{name}: agents' TLS keys must come from their own node, not a shared Secret: {tls}")
    for v in pod["volumes"]:
        for item in v.get("secret", {}).get("items", []):
            if item["path"].endswith(".key"):
                fail(f"{name}: a Secret volume hands agent pods a key: {v}")
    caps = set(pod["containers"][0]["securityContext"]["capabilities"].get("add", []))
    allowed = {"DAC_READ_SEARCH", "DAC_OVERRIDE", "CHOWN", "FOWNER", "FSETID"}
    if not caps <= allowed or "DAC_READ_SEARCH" not in caps:
        fail(f"{name}: agent capabilities {sorted(caps)}")
    if name == "base" and caps != {"DAC_READ_SEARCH"}:
        fail(f"base: the agent needs only DAC_READ_SEARCH to back up, has {sorted(caps)}")
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    kp = mounts.get("kubelet-pods", {})
    if not kp.get("readOnly") or kp.get("mountPropagation") != "HostToContainer":
        fail(f"{name}: the kubelet pods directory must be mounted read-only with HostToContainer: {kp}")
    for rule in by_kind.get("PrometheusRule", []):
        alerts = yaml.safe_load(ALERTS.read_text())
        if rule["spec"]["groups"] != alerts["groups"]:
            fail(f"{name}: PrometheusRule differs from deploy/monitoring/trireme-alerts.yml: "
                 "run components/monitoring/make-prometheusrule.py")
    return ds, by_kind["ConfigMap"]


def run_init_script(ds, configmaps, node, out_dir):
    """Run the agent's config init container's script as written."""
    (cm,) = [c for c in configmaps if c["metadata"]["name"].startswith("trireme-agent-config")]
    pod = ds["spec"]["template"]["spec"]
    (init,) = [c for c in pod["initContainers"] if c["name"] == "config"]
    with tempfile.TemporaryDirectory() as t:
        t = pathlib.Path(t)
        (t / "templates").mkdir()
        (t / "run").mkdir()
        for k, v in cm["data"].items():
            (t / "templates" / k).write_text(v)
        script = init["args"][0].replace("/etc/trireme/templates", str(t / "templates")).replace(
            "/run/trireme", str(t / "run"))
        out = subprocess.run(init["command"] + [script], env={"NODE_NAME": node, "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True)
        if out.returncode != 0:
            fail(f"init script for node {node}: {out.stderr}")
        text = (t / "run" / "agent.toml").read_text()
    if "@NODE_NAME@" in text or f'name = "{node}"' not in text:
        fail(f"init script for node {node} did not put the node's name in:\n{text}")
    if out_dir:
        (out_dir / f"agent.{node}.toml").write_text(text)
    return text


def check_bootstrap(docs, ds, cms, out_dir):
    """overlays/bootstrap-token: the enrollment port on the controller and
    its Service, the CA copied onto the controller's volume, the token
    Secret mounted 0400 in agent pods, the node's own files on a hostPath,
    and the configurations (written to out_dir for check-config)."""
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    if not any(p.get("containerPort") == 7444 for p in pod["containers"][0]["ports"]):
        fail("bootstrap-token: the controller does not expose port 7444")
    svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "trireme-controller"][0]
    if not any(p["port"] == 7444 for p in svc["spec"]["ports"]):
        fail("bootstrap-token: the Service has no enroll port")
    if not any(c["name"] == "ca" for c in pod["initContainers"]):
        fail("bootstrap-token: no init container copies the CA onto the controller's volume")
    agent = ds["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in agent["volumes"]}
    tok = vols.get("bootstrap-token", {}).get("secret", {})
    if tok.get("secretName") != "trireme-bootstrap-token" or tok.get("defaultMode") != 0o400:
        fail(f"bootstrap-token: the token Secret must be mounted mode 0400: {tok}")
    if vols["tls"].get("hostPath", {}).get("type") != "DirectoryOrCreate":
        fail(f"bootstrap-token: the node's certificate directory must be made when missing: {vols['tls']}")
    mounts = {m["name"]: m for m in agent["containers"][0]["volumeMounts"]}
    if mounts["tls"].get("readOnly"):
        fail("bootstrap-token: the agent must be able to write its key and certificate")
    (ctl,) = [c for c in cms if c["metadata"]["name"].startswith("trireme-controller-config")]
    text = ctl["data"]["controller.toml"]
    base = (HERE / "base/controller/controller.toml").read_text().splitlines()[2:]
    extra = [l for l in text.splitlines()[2:] if l not in base]
    if [l.split("=")[0].strip() for l in extra if l.strip()] != ["enroll_listen", "enroll_ca_dir"] or \
            any(l not in text.splitlines() for l in base):
        fail(f"bootstrap-token: controller.toml must be the base file plus enroll_listen and enroll_ca_dir: {extra}")
    own = run_init_script(ds, cms, "bt-node-1", out_dir)
    for want in ("bootstrap_token_file", "enroll_controller", 'cert = "/etc/trireme/tls/bt-node-1.pem"'):
        if want not in own:
            fail(f"bootstrap-token: the agent's config has no {want}:\n{own}")
    if out_dir:
        (out_dir / "controller.bootstrap.toml").write_text(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    targets = [("base", HERE / "base")] + [
        (f"overlays/{p.name}", p) for p in sorted((HERE / "overlays").iterdir()) if p.is_dir()]
    for name, path in targets:
        text = render(path)
        validate(name, text)
        docs = [d for d in yaml.safe_load_all(text) if d]
        ds, cms = check(name, docs)
        plain = run_init_script(ds, cms, "node-without-own-file", None)
        if any(l.strip().startswith("[[source]]") for l in plain.splitlines()):
            fail(f"{name}: default.toml should list no sources")
        if name == "overlays/example":
            own = run_init_script(ds, cms, "db-1", args.out)
            if 'kind = "redis"' not in own:
                fail("overlays/example: db-1 did not get node.db-1.toml")
            run_init_script(ds, cms, "plain-node", args.out)
            (ctl,) = [c for c in cms if c["metadata"]["name"].startswith("trireme-controller-config")]
            if args.out:
                (args.out / "controller.toml").write_text(ctl["data"]["controller.toml"])
        if name == "overlays/bootstrap-token":
            check_bootstrap(docs, ds, cms, args.out)
        print(f"{name}: rendered, validated ({len(docs)} objects), checked")


main()
