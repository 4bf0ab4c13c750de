#!/usr/bin/env python3
"""Writes an OCI image layout archive from a staged root file system, without a container
engine or a registry, byte for byte the same for the same inputs.

    python3 image/oci.py build --rootfs DIR --out IMAGE.tar --ref NAME:TAG \
        --entrypoint /usr/local/bin/app [--cmd run] [--user 65532:65532] [--arch amd64] \
        [--env K=V ...] [--label K=V ...] [--annotation K=V ...] [--expose 8080/tcp]
    python3 image/oci.py inspect IMAGE.tar      # prints the manifest digest, size and layers

The archive holds `oci-layout`, `index.json` and `blobs/sha256/*`: one gzip layer made from
DIR (entries sorted, owner root:root, mtime 0, modes kept), the image config and the manifest.
`index.json` names the image for containerd (`io.containerd.image.name`, the full reference)
and for OCI tools (`org.opencontainers.image.ref.name`, the tag), so `ctr images import`,
`skopeo copy oci-archive:...` and `crane push` take it as it is.

Why Python's standard library and not umoci/buildah/crane: it is on every machine that builds
the project (here and in the release workflow's Debian container), needs no daemon, no root
and nothing from a registry, and what it writes is small enough to read in one sitting.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

# The epoch: image times must not depend on when or where the image was built.
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _kv(items, what):
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"oci.py: --{what} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _tar_info(name, st):
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def layer_tar(rootfs):
    """The uncompressed layer: every entry under rootfs, sorted, with fixed owner and time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries, key=lambda p: os.path.relpath(p, rootfs)):
            rel = os.path.relpath(path, rootfs)
            st = os.lstat(path)
            info = _tar_info(rel, st)
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                sys.exit(f"oci.py: {path}: only files, directories and symlinks belong in an image")
    return buf.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    # mtime=0 and no file name: the gzip header carries nothing of the build.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(args):
    if not os.path.isdir(args.rootfs):
        sys.exit(f"oci.py: --rootfs {args.rootfs} is not a directory")
    if ":" not in args.ref.rsplit("/", 1)[-1]:
        sys.exit(f"oci.py: --ref {args.ref!r} needs a tag (NAME:TAG)")
    tag = args.ref.rsplit(":", 1)[1]
    labels = _kv(args.label, "label")
    annotations = _kv(args.annotation, "annotation")
    env = [DEFAULT_PATH] + list(args.env or [])

    layer = layer_tar(args.rootfs)
    layer_gz = gzip_bytes(layer)
    config = {
        "created": EPOCH,
        "architecture": args.arch,
        "os": "linux",
        "config": {
            "User": args.user,
            "Env": env,
            "Entrypoint": args.entrypoint,
            "Cmd": args.cmd or None,
            "WorkingDir": "/",
            "Labels": {**annotations, **labels} or None,
            "ExposedPorts": {p: {} for p in args.expose} if args.expose else None,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        "history": [{"created": EPOCH, "created_by": "image/oci.py"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    if args.arch == "arm64":
        config["variant"] = "v8"
    config_bytes = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(layer_gz),
                "size": len(layer_gz),
            }
        ],
    }
    if annotations:
        manifest["annotations"] = annotations
    manifest_bytes = canonical_json(manifest)
    platform = {"architecture": args.arch, "os": "linux"}
    if args.arch == "arm64":
        platform["variant"] = "v8"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": platform,
                "annotations": {
                    "io.containerd.image.name": args.ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }

    files = [
        ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", canonical_json(index)),
    ]
    for blob in sorted([layer_gz, config_bytes, manifest_bytes], key=sha256):
        files.append(("blobs/sha256/" + sha256(blob).split(":", 1)[1], blob))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(sha256(manifest_bytes))


def inspect(args):
    with tarfile.open(args.archive) as tar:
        index = json.load(tar.extractfile("index.json"))
        desc = index["manifests"][0]
        manifest = json.load(tar.extractfile("blobs/sha256/" + desc["digest"].split(":", 1)[1]))
        config = json.load(
            tar.extractfile("blobs/sha256/" + manifest["config"]["digest"].split(":", 1)[1])
        )
    layers = sum(layer["size"] for layer in manifest["layers"])
    print(
        json.dumps(
            {
                "ref": desc.get("annotations", {}).get("io.containerd.image.name"),
                "digest": desc["digest"],
                "compressedLayerBytes": layers,
                "archiveBytes": os.path.getsize(args.archive),
                "user": config["config"].get("User"),
                "entrypoint": config["config"].get("Entrypoint"),
                "annotations": manifest.get("annotations", {}),
            },
            indent=2,
        )
    )


def main():
    p = argparse.ArgumentParser(prog="oci.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write an OCI image layout archive")
    b.add_argument("--rootfs", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--ref", required=True, help="NAME:TAG the image is known by")
    b.add_argument("--entrypoint", nargs="+", required=True)
    b.add_argument("--cmd", nargs="*")
    b.add_argument("--user", default="65532:65532")
    b.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    b.add_argument("--env", action="append", help="K=V (repeatable)")
    b.add_argument("--label", action="append", help="K=V config label (repeatable)")
    b.add_argument(
        "--annotation",
        action="append",
        help="K=V manifest annotation, also set as a label (repeatable)",
    )
    b.add_argument("--expose", action="append", help="PORT/PROTO (repeatable)")
    b.set_defaults(func=build)
    i = sub.add_parser("inspect", help="print what an archive holds")
    i.add_argument("archive")
    i.set_defaults(func=inspect)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
