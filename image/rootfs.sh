#!/usr/bin/env bash
# image/rootfs.sh BINARY DIR: stages the image's whole file system in DIR (used by both
# image/build.sh and the Dockerfile, so the two images hold the same files):
#   /usr/local/bin/emr-ray-operator   the operator's release binary (no simulator)
#   the dynamic loader and the libraries ldd resolves (glibc, libgcc_s), at their paths
#   /etc/passwd, /etc/group           root and the non-root user/group 65532 ("nonroot")
#   /etc/nsswitch.conf                hosts: files (the pod's /etc/hosts, hostAliases), then dns
#   /tmp                              empty, 1777 (the chart mounts an emptyDir over it)
# glibc >= 2.34 has the files and dns NSS modules built in: nothing is loaded at run time.
set -euo pipefail
bin="$1"
rootfs="$2"
install -D -m 0755 "$bin" "$rootfs/usr/local/bin/emr-ray-operator"
# The dynamic loader and every library ldd resolves, at the paths it resolves them to.
interp="$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[[ -n "$interp" ]] || { echo "image/rootfs.sh: $bin has no program interpreter" >&2; exit 1; }
install -D -m 0755 "$(readlink -f "$interp")" "$rootfs$interp"
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
install -d -m 0755 "$rootfs/etc"
install -d -m 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
# Directory modes must not depend on the umask of the machine that builds.
find "$rootfs" -mindepth 1 -type d ! -path "$rootfs/tmp" -exec chmod 0755 {} +
