#!/usr/bin/python3
"""Builds the guest image from Debian packages: an uncompressed vmlinux (PVH boot) and an
uncompressed newc initramfs holding the init binary, the shared libraries it needs (found by
ldd) and the kernel modules the guest uses, in dependency order.

Reproducible: entries are sorted, owned by root, with mtime 0 and sequential inode numbers, so
the same inputs give the same bytes. Writes a manifest.json (kernel version, sizes, sha256).

  build-image.py --kernel-deb DEB --init BINARY --out DIR [--name initramfs.cpio] [--no-modules]
"""
import argparse
import hashlib
import json
import lzma
import os
import re
import subprocess
import sys
import tempfile

# What the guest needs as modules (the generic Debian kernel builds these as modules).
# BOOT_MODULES are loaded before the agent serves (its channel needs them); the rest load in
# the background right after, so the first Health.Check is answered sooner. The agent makes
# sandbox RPCs wait until they are in.
BOOT_MODULES = ["virtio_pci", "virtio_console"]
MODULES = [
    "virtio_rng", "virtio_balloon", "9p", "9pnet_virtio", "netfs", "fscache",
    "vmw_vsock_virtio_transport", "overlay", "virtio_net", "virtio_blk",
]
BACKGROUND_MARKER = "@background"


def extract_vmlinux(vmlinuz):
    data = open(vmlinuz, "rb").read()
    magic = data.find(b"\xfd7zXZ\x00")
    if magic < 0:
        sys.exit(f"{vmlinuz}: no XZ payload found")
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    out = d.decompress(data[magic:])
    if out[:4] != b"\x7fELF":
        sys.exit(f"{vmlinuz}: the XZ payload is not an ELF vmlinux")
    return out


def module_index(root):
    """name -> relative path, for every .ko under root (names with '-' normalised to '_')."""
    index = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".ko"):
                index[f[:-3].replace("-", "_")] = os.path.relpath(os.path.join(dirpath, f), root)
    return index


def depends(path):
    data = open(path, "rb").read()
    m = re.search(rb"depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def load_order(moddir, wanted):
    index = module_index(moddir)
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        builtin = {os.path.basename(l.strip())[:-3].replace("-", "_") for l in open(bpath) if l.strip()}
    order, seen = [], set()

    def visit(name, chain):
        if name in seen or name in builtin:
            return
        if name in chain:
            sys.exit(f"module dependency cycle: {' -> '.join(chain + [name])}")
        if name not in index:
            sys.exit(f"module {name} not found in {moddir}")
        for dep in depends(os.path.join(moddir, index[name])):
            visit(dep, chain + [name])
        seen.add(name)
        order.append(name)

    for name in wanted:
        visit(name.replace("-", "_"), [])
    return [(n, index[n]) for n in order]


def ldd(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        if "not a dynamic executable" in (out.stdout + out.stderr):
            return []
        sys.exit(f"ldd {binary}: {out.stderr}")
    libs = []
    for line in out.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m:
            libs.append(m.group(1))
    return sorted(set(libs))


class Cpio:
    """newc writer with deterministic metadata."""

    def __init__(self):
        self.entries = {}  # path -> (mode, data, rdev)

    def dir(self, path):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.entries.setdefault("/".join(parts[:i]), (0o040755, b"", (0, 0)))

    def file(self, path, data, mode=0o100644):
        parent = os.path.dirname(path.strip("/"))
        if parent:
            self.dir(parent)
        self.entries[path.strip("/")] = (mode, data, (0, 0))

    def chardev(self, path, major, minor, mode=0o020600):
        self.dir(os.path.dirname(path.strip("/")))
        self.entries[path.strip("/")] = (mode, b"", (major, minor))

    def bytes(self):
        out = bytearray()
        ino = 1

        def entry(name, mode, data, rdev, nlink):
            nonlocal ino
            name_b = name.encode() + b"\x00"
            hdr = "070701" + "".join(f"{v:08x}" for v in [
                ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0])
            ino += 1
            out.extend(hdr.encode())
            out.extend(name_b)
            out.extend(b"\x00" * ((4 - (len(hdr) + len(name_b)) % 4) % 4))
            out.extend(data)
            out.extend(b"\x00" * ((4 - len(data) % 4) % 4))

        for name in sorted(self.entries):
            mode, data, rdev = self.entries[name]
            entry(name, mode, data, rdev, 2 if mode & 0o040000 else 1)
        entry("TRAILER!!!", 0, b"", (0, 0), 1)
        out.extend(b"\x00" * ((512 - len(out) % 512) % 512))
        return bytes(out)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def write_if_changed(path, data):
    if os.path.exists(path) and open(path, "rb").read() == data:
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel-deb", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="initramfs.cpio")
    ap.add_argument("--no-modules", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    pkg = subprocess.run(["dpkg-deb", "-f", args.kernel_deb, "Package", "Version"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    package = pkg[0].split(": ", 1)[1]
    pkg_version = pkg[1].split(": ", 1)[1]

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", args.kernel_deb, tmp], check=True)
        kver = sorted(os.listdir(os.path.join(tmp, "lib/modules")))[0]
        vmlinux = extract_vmlinux(os.path.join(tmp, "boot", f"vmlinuz-{kver}"))
        write_if_changed(os.path.join(args.out, "vmlinux"), vmlinux)

        cpio = Cpio()
        for d in ["dev", "proc", "sys", "run", "tmp", "etc", "mnt", "lib/modules"]:
            cpio.dir(d)
        cpio.chardev("dev/console", 5, 1)
        init = open(args.init, "rb").read()
        cpio.file("init", init, 0o100755)
        for lib in ldd(args.init):
            real = os.path.realpath(lib)
            cpio.file(lib, open(real, "rb").read(), 0o100755)
        order = []
        if not args.no_modules:
            moddir = os.path.join(tmp, "lib/modules", kver)
            boot = load_order(moddir, BOOT_MODULES)
            rest = [m for m in load_order(moddir, BOOT_MODULES + MODULES) if m not in boot]
            lines = []
            for group, marker in ((boot, None), (rest, BACKGROUND_MARKER)):
                if marker:
                    lines.append(marker)
                for name, rel in group:
                    dest = f"lib/modules/{name}.ko"
                    cpio.file(dest, open(os.path.join(moddir, rel), "rb").read())
                    order.append("/" + dest)
                    lines.append("/" + dest)
            cpio.file("lib/modules/load-order", ("\n".join(lines) + "\n").encode())
        image = cpio.bytes()
        write_if_changed(os.path.join(args.out, args.name), image)

    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    manifest["kernel"] = {"package": package, "package_version": pkg_version, "release": kver,
                          "file": "vmlinux", "size": len(vmlinux), "sha256": sha256(vmlinux)}
    manifest.setdefault("initrds", {})[args.name] = {
        "size": len(image), "sha256": sha256(image), "init": os.path.basename(args.init),
        "init_size": len(init), "init_sha256": sha256(init), "modules": [os.path.basename(m) for m in order],
        "libraries": ldd(args.init)}
    write_if_changed(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    print(f"{args.out}/{args.name}: {len(image)} bytes, {len(order)} modules; vmlinux {len(vmlinux)} bytes ({kver})")


if __name__ == "__main__":
    main()
