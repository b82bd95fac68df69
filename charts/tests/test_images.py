"""The Dockerfiles, checked without Docker (no daemon or registry here).

What can be proved offline is that each Dockerfile builds binaries the
workspace really has (cargo metadata), runs the one it copies, and runs it
as the user the chart's and the injector's securityContext say, and that
the chart's default image names are the ones scripts/images tags.
"""

import json
import os
import re
import subprocess
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

# Dockerfile -> (image, the user it must run as, binaries it must hold).
IMAGES = {
    "proxy/Dockerfile": ("weft-proxy", None, ["weft-proxy"]),
    "control/Dockerfile": ("weft-control", "65532:65532", ["weft-control", "weft"]),
    "init/Dockerfile": ("weft-init", "0:0", ["weft-init"]),
    "tests/Dockerfile": ("weft-testapp", "65532:65532", ["weft-testapp"]),
}
# The images of the mesh (the chart's); the test application is not one.
MESH = {path: image for path, image in IMAGES.items() if path != "tests/Dockerfile"}


def stages(path):
    """The Dockerfile's stages: lists of (instruction, arguments), with
    continuation lines joined and comments dropped."""
    with open(os.path.join(REPO, path)) as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, rest.strip()))
    return out


def workspace_bins():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout
    )
    return {
        (p["name"], t["name"])
        for p in meta["packages"]
        for t in p["targets"]
        if "bin" in t["kind"]
    }


def proxy_uid():
    with open(os.path.join(REPO, "control", "src", "inject", "render.rs")) as f:
        return re.search(r"pub const PROXY_UID: u32 = (\d+);", f.read()).group(1)


class Dockerfiles(unittest.TestCase):
    def test_each_builds_real_binaries_and_runs_one_as_its_user(self):
        bins = workspace_bins()
        for path, (image, user, wanted) in IMAGES.items():
            with self.subTest(path):
                build, final = stages(path)[0], stages(path)[-1]
                self.assertGreaterEqual(len(stages(path)), 2, "multi-stage")
                cargo = " ".join(a for w, a in build if w == "RUN")
                package = re.search(r"-p (\S+)", cargo).group(1)
                built = re.findall(r"--bin (\S+)", cargo)
                self.assertIn("--locked", cargo)
                self.assertIn("--release", cargo)
                self.assertEqual(sorted(built), sorted(wanted))
                for b in built:
                    self.assertIn((package, b), bins, f"{path}: {package} has no bin {b}")
                users = [a for w, a in final if w == "USER"]
                want = user or f"{proxy_uid()}:{proxy_uid()}"
                self.assertEqual(users, [want])
                entry = json.loads(next(a for w, a in final if w == "ENTRYPOINT"))
                self.assertEqual(entry, [f"/usr/local/bin/{image}"])
                copied = " ".join(a for w, a in final if w == "COPY")
                for b in wanted:
                    self.assertIn(f"/out/{b}", copied)

    def test_the_chart_defaults_name_these_images(self):
        with open(os.path.join(REPO, "charts", "weft", "values.yaml")) as f:
            values = yaml.safe_load(f)
        repos = {
            values["controller"]["image"]["repository"],
            values["proxy"]["image"]["repository"],
            values["init"]["image"]["repository"],
        }
        self.assertEqual(repos, {f"weft/{image}" for image, _, _ in MESH.values()})
        with open(os.path.join(REPO, "scripts", "images")) as f:
            script = f.read()
        self.assertIn('image="$repo/weft-$name:$tag"', script)
        self.assertIn("repo=weft\n", script)

    def test_the_demo_names_the_test_application_image_scripts_images_builds(self):
        demo = os.path.join(REPO, "examples", "demo")
        images = set()
        for name in sorted(os.listdir(demo)):
            if name.endswith(".yaml"):
                with open(os.path.join(demo, name)) as f:
                    images |= set(re.findall(r"image: (\S+)", f.read()))
        self.assertEqual(images, {"weft/weft-testapp:dev"})
        with open(os.path.join(REPO, "scripts", "images")) as f:
            script = f.read()
        self.assertIn('image="$repo/weft-testapp:dev"', script)
        self.assertIn("dockerfile=tests/Dockerfile", script)

    def test_the_build_context_leaves_out_build_output(self):
        with open(os.path.join(REPO, ".dockerignore")) as f:
            ignored = f.read().split()
        self.assertIn("target", ignored)
        self.assertIn(".git", ignored)


if __name__ == "__main__":
    unittest.main()
