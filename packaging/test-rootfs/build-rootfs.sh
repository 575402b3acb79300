#!/usr/bin/env bash
# Builds the test container rootfs from Debian's busybox-static package (downloaded, never
# installed): /bin/busybox plus a symlink per applet, the usual top-level directories, and an
# /etc/passwd and /etc/group with root and an unprivileged user 1000. Used by the tests that run
# containers in the guest.
#
#   build-rootfs.sh OUT_DIR CACHE_DIR
set -euo pipefail
out=$1
cache=$2
mkdir -p "$cache"
deb=$(ls "$cache"/busybox-static_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  (cd "$cache" && { apt-get download busybox-static 2>/dev/null || { apt-get update -qq && apt-get download busybox-static; }; })
  deb=$(ls "$cache"/busybox-static_*.deb | head -n1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
rm -rf "$out.new"
mkdir -p "$out.new"/{bin,dev,proc,sys,tmp,etc,root,run,home/user}
chmod 1777 "$out.new/tmp"
install -m 0755 "$tmp/bin/busybox" "$out.new/bin/busybox"
for applet in $("$out.new/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$out.new/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' > "$out.new/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\n' > "$out.new/etc/group"
chown 1000:1000 "$out.new/home/user"
dpkg-deb -f "$deb" Package Version > "$out.new/.source"
rm -rf "$out"
mv "$out.new" "$out"
echo "$out: busybox $(dpkg-deb -f "$deb" Version), $(ls "$out/bin" | wc -l) entries in /bin"
