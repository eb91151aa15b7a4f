#!/usr/bin/env bash
# Make podman usable on this machine and build the demo pipeline's image offline. Idempotent.
#
# 1. Writes a containers.conf drop-in (/etc/containers/containers.conf.d/x2c.conf, our own file,
#    never a user's containers.conf) with cgroup_manager = "cgroupfs" and default_ulimits = []:
#    inside this sandbox runc cannot set the default rlimits ("error setting rlimit type 7") and
#    there is no systemd. Runs must also pass --runtime runc (x2c.containers does).
# 2. Builds localhost/x2c-demo:latest without any registry: a root filesystem assembled from this
#    machine's own files (the project interpreter, its standard library minus tests/idle/tk, the
#    shared libraries ldd lists, numpy + nibabel and their pure-python dependencies, and
#    x2c/demo_pipeline.py as a one-module x2c package), streamed into `podman import`.
#    The image carries a label with a hash of its ingredients; an up-to-date image is kept.
#
#   scripts/podman-setup.sh            # config + image (skips what is already current)
#   X2C_DEMO_IMAGE=... PYTHON=...      # override the image name or the interpreter to copy
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${X2C_DEMO_IMAGE:-localhost/x2c-demo:latest}
PY=${PYTHON:-.venv/bin/python}
CONF_DIR=/etc/containers/containers.conf.d
CONF=$CONF_DIR/x2c.conf

if ! command -v podman >/dev/null; then
  echo "podman-setup: podman is not installed (apt-get install podman runc)" >&2
  exit 1
fi

want_conf='# Written by x2c scripts/podman-setup.sh; safe to delete.
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want_conf" ]; then
  mkdir -p "$CONF_DIR"
  printf '%s\n' "$want_conf" >"$CONF.tmp" && mv -f "$CONF.tmp" "$CONF"
  echo "podman-setup: wrote $CONF"
fi

hash=$(
  {
    cat x2c/demo_pipeline.py "$0"
    "$PY" -c 'import sys, numpy, nibabel; print(sys.version, numpy.__version__, nibabel.__version__)'
  } | sha256sum | cut -c1-16
)
have=$(podman image inspect --format '{{index .Labels "x2c.demo.hash"}}' "$IMAGE" 2>/dev/null || true)
if [ "$have" = "$hash" ]; then
  exit 0
fi

start=$(date +%s.%N)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$tmp/rootfs.tar" x2c/demo_pipeline.py <<'PY'
"""Write a root filesystem tarball holding this interpreter, numpy, nibabel and the demo."""
import os
import re
import subprocess
import sys
import sysconfig
import tarfile

out, demo = sys.argv[1], sys.argv[2]
exe = os.path.realpath(sys.executable)
stdlib = sysconfig.get_paths()["stdlib"]
purelib = sysconfig.get_paths()["purelib"]
SITE = "/opt/x2c-site"
SKIP_STDLIB = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo",
               "ensurepip", "lib2to3"}
PACKAGES = ["numpy", "numpy.libs", "nibabel", "packaging", "importlib_resources",
            "typing_extensions.py"]


added: set[str] = set()


def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = info.name.split("/")
    if "tests" in parts or info.name.endswith((".a", ".pyi")) or info.name in added:
        return None  # ldd also lists numpy.libs/*.so, which the package copy brings: add once
    added.add(info.name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


libs: set[str] = set()
def ldd(path: str) -> None:
    done = subprocess.run(["ldd", path], capture_output=True, text=True)
    for m in re.finditer(r"(?:=>\s*)?(/\S+\.so[^\s]*)\s+\(0x", done.stdout):
        lib = os.path.normpath(m.group(1))
        if not lib.startswith(purelib + "/"):  # numpy.libs comes with its package copy
            libs.add(lib)


ldd(exe)
elf_dirs = [os.path.join(stdlib, "lib-dynload")] + [os.path.join(purelib, p) for p in PACKAGES]
for top in elf_dirs:
    for root, _, files in os.walk(top):
        for f in files:
            if ".so" in f:
                ldd(os.path.join(root, f))

with tarfile.open(out, "w", dereference=True) as tar:
    def add_dir(name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, mode
        tar.addfile(info)

    seen_dirs: set[str] = set()
    def parents(path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in seen_dirs:
                seen_dirs.add(d)
                add_dir(d)

    for d in ("tmp",):
        add_dir(d, 0o1777)
    for path in sorted({exe, *libs}):
        parents(path)
        tar.add(path, arcname=path.lstrip("/"), filter=skip)
    parents(stdlib + "/x")
    for entry in sorted(os.listdir(stdlib)):
        if entry in SKIP_STDLIB or entry.startswith("config-"):
            continue
        tar.add(os.path.join(stdlib, entry), arcname=f"{stdlib.lstrip('/')}/{entry}", filter=skip)
    parents(SITE + "/x")
    for entry in PACKAGES:
        src = os.path.join(purelib, entry)
        if os.path.exists(src):
            tar.add(src, arcname=f"{SITE.lstrip('/')}/{entry}", filter=skip)
    add_dir(f"{SITE}/x2c")
    init = tarfile.TarInfo(f"{SITE.lstrip('/')}/x2c/__init__.py")
    init.mode = 0o644
    tar.addfile(init)
    tar.add(demo, arcname=f"{SITE.lstrip('/')}/x2c/demo_pipeline.py", filter=skip)
    parents("/usr/local/bin/x")
    for name in ("python3", "python"):
        link = tarfile.TarInfo(f"usr/local/bin/{name}")
        link.type, link.linkname = tarfile.SYMTYPE, exe
        tar.addfile(link)
PY

podman import -q \
  --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
  --change "ENV PYTHONPATH=/opt/x2c-site" \
  --change "ENV PYTHONDONTWRITEBYTECODE=1" \
  --change "LABEL x2c.demo.hash=$hash" \
  "$tmp/rootfs.tar" "$IMAGE" >/dev/null
podman run --rm --runtime runc --network none "$IMAGE" \
  python3 -c 'import numpy, nibabel, x2c.demo_pipeline' \
  || { echo "podman-setup: the new image $IMAGE cannot import numpy/nibabel" >&2; exit 1; }
# earlier builds of this image lost their tag: remove them (only images carrying our label)
for old in $(podman images -q --filter dangling=true --filter label=x2c.demo.hash); do
  podman rmi "$old" >/dev/null 2>&1 || true
done
end=$(date +%s.%N)
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
printf 'podman-setup: built %s in %.1f s, %s MB\n' "$IMAGE" "$(echo "$end - $start" | bc)" \
  "$((size / 1000000))"
