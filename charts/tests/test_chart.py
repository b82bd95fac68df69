"""The weft chart, checked offline on every CI run (scripts/chart-test).

Rendered and linted with the real Helm v4 SDK (helm-python-sdk, Helm's Go
code as a library); every rendered object and CRD validated strictly
against the Kubernetes schemas of the oldest and newest Kubernetes the
chart supports (kubernetes-validate); the SMI examples validated against
the openAPIV3Schema of their CRD version (jsonschema).

Set WEFT_CHART_RENDER_DIR to also write each case's manifests there
(`<case>.yaml`), for tests that apply them elsewhere.
"""

import copy
import glob
import json
import os
import re
import subprocess
import time
import unittest
import urllib.request

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..", "..")
CHART = os.path.join(REPO, "charts", "weft")
NAMESPACE = "weft-system"
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion, the
# first with native sidecars on by default) and the newest known.
KUBE_VERSIONS = ["1.29.0", "1.35.0"]

ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBanchor\n-----END CERTIFICATE-----\n"
ISSUER = "-----BEGIN CERTIFICATE-----\nMIIBissuer\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHkey\n-----END PRIVATE KEY-----\n"

# What `--set-file identity...` from `weft identity init` gives.
ISSUER_VALUES = {
    "identity": {
        "trustAnchorsPEM": ANCHOR,
        "issuer": {"crtPEM": ISSUER, "keyPEM": KEY},
    }
}


def merged(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


# The matrix: every case must render, lint and validate.
CASES = {
    "default": ISSUER_VALUES,
    "external-issuer": {
        "identity": {"issuer": {"externalSecret": "weft-issuer-cm"}},
        "webhook": {
            "manageCABundle": False,
            "annotations": {"cert-manager.io/inject-ca-from": "weft-system/weft-webhook"},
        },
    },
    "classic-sidecars": merged(ISSUER_VALUES, {"proxy": {"nativeSidecar": False}}),
    "tracing": merged(
        ISSUER_VALUES, {"tracing": {"collectorAddress": "otel-collector.tracing:4317"}}
    ),
    "one-replica": merged(ISSUER_VALUES, {"controller": {"replicas": 1}}),
    "everything": merged(
        ISSUER_VALUES,
        {
            "controller": {
                "replicas": 3,
                "priorityClassName": "system-cluster-critical",
                "antiAffinity": "required",
                "namespaces": ["shop", "bank"],
                "imagePullSecrets": ["regcred"],
                "logFormat": "json",
                "logLevel": "info,weft_control=debug",
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            },
            "defaultInboundPolicy": "deny",
            "proxy": {"resources": {"limits": {"cpu": "1"}}},
            "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        },
    ),
    "no-webhook": merged(ISSUER_VALUES, {"webhook": {"enabled": False}}),
}


def render(values, namespace=NAMESPACE):
    """Every object the chart installs: its CRDs, then its templates."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name="weft", namespace=namespace, is_install=True)
        crds = [c["data"] for c in chart.crds]
    objects = []
    for text in crds + [t for name, t in sorted(manifests.items()) if not name.endswith("NOTES.txt")]:
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    return objects, manifests


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objects, kind, name=None):
    found = by_kind(objects, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def args_of(objects):
    deploy = one(objects, "Deployment", "weft-control")
    return deploy["spec"]["template"]["spec"]["containers"][0]["args"]


class Lint(unittest.TestCase):
    def test_lint_is_clean_for_every_case(self):
        for case, values in CASES.items():
            for kube in KUBE_VERSIONS:
                with self.subTest(case=case, kube=kube):
                    report = helm.lint(
                        CHART, values, strict=True, namespace=NAMESPACE, kube_version="v" + kube
                    )
                    self.assertEqual(report["errors"], [])
                    # Only infos, and only the one about a missing icon.
                    loud = [m for m in report["messages"] if m["severity"] >= 2]
                    self.assertEqual(loud, [])
                    infos = {m["error"] for m in report["messages"]}
                    self.assertLessEqual(infos, {"icon is recommended"})


    def test_kube_version(self):
        # helm install checks it against the cluster (lint and render do not).
        with helm.Chart.load(CHART) as chart:
            self.assertEqual(chart.metadata["kubeVersion"], ">=1.29.0-0")
            self.assertEqual(chart.metadata["apiVersion"], "v2")


class Render(unittest.TestCase):
    def test_every_object_is_valid_kubernetes(self):
        for case, values in CASES.items():
            objects, _ = render(values)
            for kube in KUBE_VERSIONS:
                for o in objects:
                    kind = f"{o['kind']}/{o['metadata']['name']}"
                    with self.subTest(case=case, kube=kube, object=kind):
                        if o["apiVersion"].startswith("monitoring.coreos.com/"):
                            # Not a built-in kind: no schema to check it with.
                            self.assertEqual(o["kind"], "ServiceMonitor")
                            continue
                        try:
                            kubernetes_validate.validate(o, kube, strict=True)
                        except kubernetes_validate.ValidationError as e:
                            self.fail(f"{kind} on {kube}: {e.message} at {list(e.absolute_path)}")

    def test_validation_is_strict(self):
        objects, _ = render(ISSUER_VALUES)
        deploy = copy.deepcopy(one(objects, "Deployment"))
        deploy["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
        for kube in KUBE_VERSIONS:
            with self.assertRaises(kubernetes_validate.ValidationError) as err:
                kubernetes_validate.validate(deploy, kube, strict=True)
            self.assertIn("'bogus' was unexpected", err.exception.message)

    def test_no_issuer_is_refused_with_how_to_make_one(self):
        with helm.Chart.load(CHART) as chart:
            with self.assertRaises(helm.HelmError) as err:
                chart.render({}, name="weft", namespace=NAMESPACE, is_install=True)
        self.assertIn("weft needs an issuer", str(err.exception))
        self.assertIn("weft identity init", str(err.exception))
        self.assertIn("externalSecret", str(err.exception))
        # Half an issuer is no issuer.
        with helm.Chart.load(CHART) as chart:
            with self.assertRaises(helm.HelmError):
                chart.render(
                    {"identity": {"issuer": {"crtPEM": ISSUER, "keyPEM": KEY}}},
                    name="weft",
                    namespace=NAMESPACE,
                )

    def test_default_objects(self):
        objects, manifests = render(ISSUER_VALUES)
        kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        self.assertEqual(
            kinds,
            [
                "ClusterRole/weft-control",
                "ClusterRoleBinding/weft-control",
                "ConfigMap/weft-trust-anchors",
                "CustomResourceDefinition/httproutegroups.specs.smi-spec.io",
                "CustomResourceDefinition/tcproutes.specs.smi-spec.io",
                "CustomResourceDefinition/trafficsplits.split.smi-spec.io",
                "CustomResourceDefinition/traffictargets.access.smi-spec.io",
                "Deployment/weft-control",
                "MutatingWebhookConfiguration/weft-injector",
                "PodDisruptionBudget/weft-control",
                "Role/weft-control",
                "RoleBinding/weft-control",
                "Secret/weft-issuer",
                "Service/weft-control",
                "ServiceAccount/weft-control",
            ],
        )
        for o in objects:
            if o["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"):
                self.assertEqual(o["metadata"]["namespace"], NAMESPACE, o["kind"])
        self.assertIn("weft.dev/inject=enabled", manifests["weft/templates/NOTES.txt"])
        self.assertIn("weft check -n weft-system", manifests["weft/templates/NOTES.txt"])

        deploy = one(objects, "Deployment")
        spec = deploy["spec"]["template"]["spec"]
        self.assertEqual(deploy["spec"]["replicas"], 2)
        self.assertEqual(spec["serviceAccountName"], "weft-control")
        self.assertNotIn("volumes", spec)
        (c,) = spec["containers"]
        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
        self.assertTrue(c["securityContext"]["runAsNonRoot"])
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/live", "port": "admin"})
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/ready", "port": "admin"})
        self.assertEqual(c["startupProbe"]["grpc"], {"port": 8086})
        self.assertIn("requests", c["resources"])
        self.assertIn("limits", c["resources"])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"grpc": 8086, "webhook": 8443, "admin": 9990})
        self.assertIn("podAntiAffinity", spec["affinity"])
        self.assertTrue(spec["topologySpreadConstraints"])
        self.assertNotIn("priorityClassName", spec)

        service = one(objects, "Service")
        self.assertEqual({p["name"]: p["port"] for p in service["spec"]["ports"]}, ports)
        self.assertEqual(service["spec"]["selector"], deploy["spec"]["selector"]["matchLabels"])
        pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        for k, v in service["spec"]["selector"].items():
            self.assertEqual(pod_labels[k], v)
        pdb = one(objects, "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["selector"], deploy["spec"]["selector"])

        secret = one(objects, "Secret")
        self.assertEqual(secret["type"], "kubernetes.io/tls")
        self.assertEqual(sorted(secret["data"]), ["ca.crt", "tls.crt", "tls.key"])
        self.assertEqual(one(objects, "ConfigMap")["data"]["ca.crt"].strip(), ANCHOR.strip())

    def test_args_are_weft_controls_flags(self):
        objects, _ = render(ISSUER_VALUES)
        self.assertEqual(
            args_of(objects),
            [
                "--source=kube",
                "--cluster-domain=cluster.local",
                "--trust-domain=cluster.local",
                "--max-watches-per-connection=10000",
                "--max-connections=10000",
                "--identity-secret=weft-system/weft-issuer",
                "--identity-token-audience=weft",
                "--leaf-lifetime=24h",
                "--default-inbound-policy=all-unauthenticated",
                "--webhook",
                "--webhook-dns-names=weft-control.weft-system.svc",
                "--webhook-configuration=weft-injector",
                "--proxy-image=weft/weft-proxy:0.1.0",
                "--init-image=weft/weft-init:0.1.0",
                "--proxy-control-addr=weft-control.weft-system.svc.cluster.local:8086",
                "--trust-anchors-configmap=weft-trust-anchors",
                "--publish-trust-anchors=true",
                "--proxy-log-level=warn,weft_proxy=info",
                "--proxy-cpu-request=100m",
                "--proxy-memory-limit=250Mi",
                "--proxy-memory-request=20Mi",
                "--proxy-native-sidecar=true",
                "--proxy-token-expiry=1h",
                "--log-format=plain",
                "--log=info",
            ],
        )

    def test_every_flag_exists_in_weft_control(self):
        """Each flag the chart passes is declared in control/src (a `#[arg(long ...)]`
        field of weft-control's Config or the injector's Settings)."""
        known = weft_control_flags()
        self.assertIn("identity-secret", known)
        for case, values in CASES.items():
            objects, _ = render(values)
            for arg in args_of(objects):
                flag = re.match(r"^--([a-z0-9-]+)", arg).group(1)
                with self.subTest(case=case, flag=flag):
                    self.assertIn(flag, known)

    def test_matrix(self):
        objects, _ = render(CASES["external-issuer"])
        self.assertEqual(by_kind(objects, "Secret"), [])
        self.assertEqual(by_kind(objects, "ConfigMap"), [])
        args = args_of(objects)
        self.assertIn("--identity-secret=weft-system/weft-issuer-cm", args)
        self.assertIn("--webhook-configuration=", args)
        role = one(objects, "Role")
        self.assertEqual(role["rules"][0]["resourceNames"], ["weft-issuer-cm"])
        hook = one(objects, "MutatingWebhookConfiguration")
        self.assertEqual(hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "weft-system/weft-webhook")
        groups = {g for r in one(objects, "ClusterRole")["rules"] for g in r["apiGroups"]}
        self.assertNotIn("admissionregistration.k8s.io", groups)

        self.assertIn("--proxy-native-sidecar=false", args_of(render(CASES["classic-sidecars"])[0]))

        # The collector reaches the injector and weft-control's own spans,
        # and nothing else changes.
        traced_objects = render(CASES["tracing"])[0]
        traced = args_of(traced_objects)
        self.assertIn("--proxy-trace-collector-addr=otel-collector.tracing:4317", traced)
        self.assertIn("--trace-collector-addr=otel-collector.tracing:4317", traced)
        self.assertEqual(
            [a for a in traced if not a.startswith(("--proxy-trace-collector-addr=", "--trace-collector-addr="))],
            args_of(render(ISSUER_VALUES)[0]),
        )
        # The spans' resource: the pod's name, namespace and node.
        container = one(traced_objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(
            {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]},
            {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName"},
        )

        objects, _ = render(CASES["one-replica"])
        self.assertEqual(one(objects, "Deployment")["spec"]["replicas"], 1)
        self.assertEqual(by_kind(objects, "PodDisruptionBudget"), [])

        objects, _ = render(CASES["everything"])
        spec = one(objects, "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(spec["priorityClassName"], "system-cluster-critical")
        self.assertIn("requiredDuringSchedulingIgnoredDuringExecution", spec["affinity"]["podAntiAffinity"])
        self.assertEqual(spec["imagePullSecrets"], [{"name": "regcred"}])
        args = args_of(objects)
        for want in ["--namespaces=shop,bank", "--default-inbound-policy=deny", "--proxy-cpu-limit=1", "--log-format=json"]:
            self.assertIn(want, args)
        self.assertEqual(one(objects, "ServiceMonitor")["metadata"]["labels"]["release"], "prom")

        objects, _ = render(CASES["no-webhook"])
        self.assertEqual(by_kind(objects, "MutatingWebhookConfiguration"), [])
        self.assertNotIn("--webhook", args_of(objects))
        self.assertNotIn("webhook", [p["name"] for p in one(objects, "Service")["spec"]["ports"]])

    def test_webhook_configuration(self):
        objects, _ = render(ISSUER_VALUES, namespace="mesh")
        (hook,) = one(objects, "MutatingWebhookConfiguration", "weft-injector")["webhooks"]
        self.assertEqual(hook["name"], "weft-injector.weft.dev")
        self.assertEqual(hook["sideEffects"], "None")
        self.assertEqual(hook["failurePolicy"], "Ignore")
        self.assertEqual(hook["timeoutSeconds"], 10)
        self.assertEqual(hook["admissionReviewVersions"], ["v1"])
        self.assertNotIn("caBundle", hook["clientConfig"])
        self.assertEqual(
            hook["clientConfig"]["service"],
            {"name": "weft-control", "namespace": "mesh", "path": "/inject", "port": 8443},
        )
        self.assertEqual(hook["rules"][0]["operations"], ["CREATE"])
        self.assertEqual(hook["rules"][0]["resources"], ["pods"])
        (expr,) = hook["namespaceSelector"]["matchExpressions"]
        self.assertEqual(expr["key"], "kubernetes.io/metadata.name")
        self.assertEqual(expr["operator"], "NotIn")
        self.assertIn("mesh", expr["values"])
        self.assertIn("kube-system", expr["values"])
        # The serving certificate's name is the Service the hook calls.
        self.assertIn("--webhook-dns-names=weft-control.mesh.svc", args_of(objects))
        self.assertIn("--proxy-control-addr=weft-control.mesh.svc.cluster.local:8086", args_of(objects))

    def test_rbac_is_exactly_what_weft_control_calls(self):
        objects, _ = render(ISSUER_VALUES)
        rules = {
            (g, r): (sorted(rule["verbs"]), rule.get("resourceNames"))
            for rule in one(objects, "ClusterRole")["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
        }
        watch = (["list", "watch"], None)
        self.assertEqual(
            rules,
            {
                ("", "services"): watch,
                ("", "pods"): watch,
                ("", "namespaces"): (["get", "list", "watch"], None),
                ("discovery.k8s.io", "endpointslices"): watch,
                ("split.smi-spec.io", "trafficsplits"): watch,
                ("specs.smi-spec.io", "httproutegroups"): watch,
                ("specs.smi-spec.io", "tcproutes"): watch,
                ("access.smi-spec.io", "traffictargets"): watch,
                ("gateway.networking.k8s.io", "httproutes"): watch,
                ("gateway.networking.k8s.io", "grpcroutes"): watch,
                ("authentication.k8s.io", "tokenreviews"): (["create"], None),
                ("events.k8s.io", "events"): (["create", "patch"], None),
                ("", "configmaps"): (["create", "patch"], None),
                ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): (
                    ["get", "patch"],
                    ["weft-injector"],
                ),
            },
        )
        # Without publishing, no ConfigMap rights.
        quiet, _ = render(merged(ISSUER_VALUES, {"identity": {"publishTrustAnchors": False}}))
        quiet_rules = [r for r in one(quiet, "ClusterRole")["rules"] if "configmaps" in r["resources"]]
        self.assertEqual(quiet_rules, [])
        self.assertIn("--publish-trust-anchors=false", args_of(quiet))
        self.assertIn("--publish-trust-anchors=true", args_of(objects))
        role = one(objects, "Role")
        self.assertEqual(
            role["rules"],
            [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["weft-issuer"], "verbs": ["get", "list", "watch"]}],
        )
        for binding in ("ClusterRoleBinding", "RoleBinding"):
            b = one(objects, binding)
            self.assertEqual(b["subjects"], [{"kind": "ServiceAccount", "name": "weft-control", "namespace": NAMESPACE}])

    def test_render_dir(self):
        """Writes each case's objects to WEFT_CHART_RENDER_DIR/<case>.yaml
        and <case>.json (a list; control/tests/chart.rs reads default.json)
        (scripts/chart-test: target/chart-render), for tests that apply
        them elsewhere. With the `weft` CLI built, the issuer is a real one
        from `weft identity init` (its files in <dir>/identity/)."""
        out = os.environ.get("WEFT_CHART_RENDER_DIR")
        if not out:
            self.skipTest("WEFT_CHART_RENDER_DIR is not set")
        os.makedirs(out, exist_ok=True)
        identity = ISSUER_VALUES
        weft = os.path.join(os.path.dirname(weft_control_binary() or ""), "weft")
        if weft_control_binary() and os.path.exists(weft):
            ca = os.path.join(out, "identity")
            subprocess.run([weft, "identity", "init", "--out", ca, "--force"], check=True, capture_output=True)
            read = lambda f: open(os.path.join(ca, f)).read()
            identity = {
                "identity": {
                    "trustAnchorsPEM": read("ca.crt"),
                    "issuer": {"crtPEM": read("tls.crt"), "keyPEM": read("tls.key")},
                }
            }
        for case, values in CASES.items():
            if values is not CASES["external-issuer"]:
                values = merged(values, identity)
            objects, _ = render(values)
            with open(os.path.join(out, f"{case}.yaml"), "w") as f:
                yaml.safe_dump_all(objects, f, sort_keys=False)
            with open(os.path.join(out, f"{case}.json"), "w") as f:
                json.dump(objects, f, indent=1)
            self.assertTrue(objects)


class Values(unittest.TestCase):
    def refused(self, values):
        with helm.Chart.load(CHART) as chart:
            with self.assertRaises(helm.HelmValuesError) as err:
                chart.validate_schema(merged(ISSUER_VALUES, values))
        return str(err.exception)

    def test_wrong_values_are_refused_with_a_message(self):
        msg = self.refused({"controller": {"replicas": "two"}})
        self.assertIn("/controller/replicas", msg)
        self.assertIn("want integer", msg)
        msg = self.refused({"controller": {"logLevel": "loud"}})
        self.assertIn("/controller/logLevel", msg)
        msg = self.refused({"proxy": {"logLevel": "warn,weft_proxy=chatty"}})
        self.assertIn("/proxy/logLevel", msg)
        for bad in [
            {"defaultInboundPolicy": "allow"},
            {"controller": {"replicas": 0}},
            {"controller": {"replicaCount": 2}},
            {"webhook": {"failurePolicy": "Sometimes"}},
            {"webhook": {"timeoutSeconds": 31}},
            {"proxy": {"resources": {"requests": {"cpu": "lots"}}}},
            {"proxy": {"tokenExpiry": "1 hour"}},
            {"identity": {"issuer": {"keyPEM": "not a key"}}},
            {"tracing": {"collectorAddress": "http://collector:4317"}},
        ]:
            with self.subTest(values=bad):
                self.refused(bad)

    def test_good_values_pass(self):
        with helm.Chart.load(CHART) as chart:
            for values in CASES.values():
                chart.validate_schema(values)
            for level in ["info", "warn,weft_proxy=debug", "DEBUG", "off", "info,weft_control::sources=trace"]:
                chart.validate_schema(merged(ISSUER_VALUES, {"controller": {"logLevel": level}}))

    def test_every_value_is_commented(self):
        """Each key of values.yaml has a comment above it, or is a plain
        sub-key of a commented block (requests/limits, image fields)."""
        lines = open(os.path.join(CHART, "values.yaml")).read().splitlines()
        obvious = {"repository", "tag", "requests", "limits", "cpu", "memory", "enabled", "interval", "labels"}
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
            if not m or m.group(2) in obvious:
                continue
            above = lines[i - 1].strip() if i else ""
            with self.subTest(key=m.group(2), line=i + 1):
                self.assertTrue(above.startswith("#"), line)


class Crds(unittest.TestCase):
    def crd_schemas(self):
        schemas = {}
        for path in glob.glob(os.path.join(CHART, "crds", "*.yaml")):
            crd = yaml.safe_load(open(path))
            spec = crd["spec"]
            for v in spec["versions"]:
                schemas[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
        return schemas

    def test_versions(self):
        versions = {k for k in self.crd_schemas()}
        self.assertEqual(
            versions,
            {
                ("split.smi-spec.io/v1alpha4", "TrafficSplit"),
                ("split.smi-spec.io/v1alpha2", "TrafficSplit"),
                ("split.smi-spec.io/v1alpha1", "TrafficSplit"),
                ("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup"),
                ("specs.smi-spec.io/v1alpha4", "TCPRoute"),
                ("access.smi-spec.io/v1alpha3", "TrafficTarget"),
            },
        )
        split = yaml.safe_load(open(os.path.join(CHART, "crds", "trafficsplits.yaml")))
        stored = [v["name"] for v in split["spec"]["versions"] if v["storage"]]
        self.assertEqual(stored, ["v1alpha4"])

    def test_examples_match_their_crds(self):
        schemas = self.crd_schemas()
        seen = set()
        for path in sorted(glob.glob(os.path.join(CHART, "examples", "*.yaml"))):
            for doc in yaml.safe_load_all(open(path)):
                key = (doc["apiVersion"], doc["kind"])
                seen.add(key)
                with self.subTest(example=f"{os.path.basename(path)}: {doc['kind']}/{doc['metadata']['name']}"):
                    jsonschema.validate(doc, openapi_to_jsonschema(schemas[key]))
        self.assertEqual(seen, set(schemas), "an example of every CRD version")

    def test_bad_resources_are_refused(self):
        schemas = self.crd_schemas()
        split4 = openapi_to_jsonschema(schemas[("split.smi-spec.io/v1alpha4", "TrafficSplit")])
        split1 = openapi_to_jsonschema(schemas[("split.smi-spec.io/v1alpha1", "TrafficSplit")])
        tcp = openapi_to_jsonschema(schemas[("specs.smi-spec.io/v1alpha4", "TCPRoute")])
        target = openapi_to_jsonschema(schemas[("access.smi-spec.io/v1alpha3", "TrafficTarget")])
        backends = lambda *b: {"spec": {"service": "web", "backends": list(b)}}
        for schema, doc in [
            (split4, backends({"service": "a", "weight": -1})),
            (split4, backends({"service": "a", "weight": "500m"})),
            (split4, backends()),
            (split4, {"spec": {"backends": [{"service": "a", "weight": 1}]}}),
            (split1, backends({"service": "a", "weight": "half"})),
            (tcp, {"spec": {"matches": {"ports": [70000]}}}),
            (target, {"spec": {"destination": {"kind": "User", "name": "x"}}}),
        ]:
            with self.subTest(doc=doc):
                with self.assertRaises(jsonschema.ValidationError):
                    jsonschema.validate(doc, schema)
        jsonschema.validate(backends({"service": "a", "weight": "1500m"}), split1)
        jsonschema.validate(backends({"service": "a", "weight": 2}), split1)


def weft_control_binary():
    """The built weft-control: WEFT_CONTROL_BIN (scripts/test builds it and
    names it), else target/debug/weft-control when built, else None."""
    named = os.environ.get("WEFT_CONTROL_BIN")
    if named:
        # Named (scripts/test does): these tests must run, not be skipped.
        assert os.path.exists(named), f"WEFT_CONTROL_BIN={named} does not exist"
        return named
    binary = os.path.join(REPO, "target", "debug", "weft-control")
    return binary if os.path.exists(binary) else None


def start(binary, args):
    """weft-control with `args`, its listeners on loopback port 0."""
    loopback = ["--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--webhook-addr=127.0.0.1:0"]
    return subprocess.Popen(
        [binary, *args, *loopback],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WEFT_LOG": "info", "NO_COLOR": "1"},
    )


def stop(process):
    process.terminate()
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


class WeftControl(unittest.TestCase):
    """The real binary takes what the chart renders."""

    def setUp(self):
        self.binary = weft_control_binary()
        if not self.binary:
            self.skipTest("target/debug/weft-control is not built (cargo build -p weft-control)")

    def test_it_starts_with_the_deployments_args(self):
        # An API server that is not there: weft-control keeps retrying its
        # watches; a flag or value it refuses would end it at once (exit 2
        # or 64).
        running = {}
        for case, values in CASES.items():
            args = args_of(render(values)[0]) + ["--kube-api-server=http://127.0.0.1:9"]
            running[case] = start(self.binary, args)
        time.sleep(2)
        for case, process in running.items():
            code = process.poll()
            out = stop(process)
            with self.subTest(case=case):
                self.assertIsNone(code, out[-2000:])
                # The configuration it logs at start (plain or JSON).
                self.assertRegex(out[:4000], r"starting config=|\"message\":\"starting\"")

    def test_it_reads_every_example(self):
        process = start(self.binary, [f"--source={os.path.join(CHART, 'examples')}"])
        try:
            admin = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not admin:
                line = process.stdout.readline()
                m = re.search(r"admin=(127\.0\.0\.1:\d+)", line)
                admin = m and m.group(1)
            self.assertTrue(admin, "weft-control did not say its admin address")
            metrics = ""
            while time.monotonic() < deadline:
                metrics = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
                if 'weft_control_objects{kind="TrafficSplit"} 4' in metrics:
                    break
                time.sleep(0.1)
        finally:
            stop(process)
        for kind, n in [("TrafficSplit", 4), ("HTTPRouteGroup", 1), ("TCPRoute", 1), ("TrafficTarget", 2)]:
            self.assertIn(f'weft_control_objects{{kind="{kind}"}} {n}', metrics)
        refused = [l for l in metrics.splitlines() if l.startswith("weft_control_source_errors_total{")]
        self.assertEqual(refused, [])


def openapi_to_jsonschema(schema):
    """A CRD's structural schema as plain JSON Schema: x-kubernetes-int-or-string
    allows an integer or a string; other x-kubernetes-* keys are dropped."""
    if isinstance(schema, list):
        return [openapi_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: openapi_to_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string") and "type" not in schema and "anyOf" not in schema:
        out["type"] = ["integer", "string"]
    return out


def weft_control_flags():
    """The long flags of weft-control: from its `--help` when the binary is
    built (scripts/test builds it first; WEFT_CONTROL_BIN names another),
    else from its clap declarations in control/src."""
    binary = weft_control_binary()
    if binary:
        text = subprocess.run([binary, "--help"], check=True, capture_output=True, text=True).stdout
        return set(re.findall(r"^\s+--([a-z0-9-]+)", text, re.M))
    root = os.path.join(REPO, "control", "src")
    flags = set()
    for name in ["config.rs", os.path.join("inject", "mod.rs")]:
        text = open(os.path.join(root, name)).read()
        for attrs, field in re.findall(r"#\[arg\((.*?)\)\]\s*\n\s*(?:///[^\n]*\n\s*)*pub (\w+):", text, re.S):
            if re.search(r"\blong\b", attrs) and "skip" not in attrs:
                m = re.search(r'long\s*=\s*"([^"]+)"', attrs)
                flags.add(m.group(1) if m else field.replace("_", "-"))
    return flags


if __name__ == "__main__":
    unittest.main()
