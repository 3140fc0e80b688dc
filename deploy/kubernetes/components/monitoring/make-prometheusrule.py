#!/usr/bin/env python3
"""Write prometheusrule.yaml from deploy/monitoring/trireme-alerts.yml.

    python3 deploy/kubernetes/components/monitoring/make-prometheusrule.py

The rules live in one place (trireme-alerts.yml, unit-tested by promtool);
this wraps them in a PrometheusRule. controller/tests/deploy_files.rs
checks the two agree.
"""
import pathlib
import yaml

here = pathlib.Path(__file__).resolve().parent
rules = yaml.safe_load((here / "../../../monitoring/trireme-alerts.yml").read_text())
doc = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "trireme", "namespace": "trireme"},
    "spec": {"groups": rules["groups"]},
}
header = (
    "# GENERATED from deploy/monitoring/trireme-alerts.yml by make-prometheusrule.py:\n"
    "# edit that file and run the script; the test suite checks they agree.\n"
)
(here / "prometheusrule.yaml").write_text(
    header + yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True)
)
