#!/usr/bin/env bash
# Assembles the image's whole runtime root filesystem from this machine:
#   tests/image/stage-rootfs.sh BINARY OUTDIR [NAME]
# The binary at /usr/local/bin/scim-operator, exactly the shared libraries it
# links (ldd) and the dynamic loader, passwd/group entries for nonroot
# (65532:65532), the CA bundle (https to ZITADEL verifies certificates) and
# nsswitch.conf (host names resolve from /etc/hosts, then DNS; glibc >= 2.34
# has the files and dns NSS modules and the resolver inside libc.so.6, so no
# libnss_*.so is needed: checked below).
#
# The Containerfile runs this in its Debian builder stage; `make image` runs it
# on the host (Debian too) and feeds OUTDIR to the same Containerfile as the
# `rootfs` build context, so both builds produce the same runtime stage.
set -euo pipefail
[ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: $0 BINARY OUTDIR [NAME (default scim-operator)]" >&2; exit 2; }
bin=$1 out=$2 name=${3:-scim-operator}
[ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
install -m 0755 "$bin" "$out/usr/local/bin/$name"
# The release profile keeps line tables for backtraces on the build machine
# (three quarters of the file); the image keeps the symbols only.
strip --strip-debug "$out/usr/local/bin/$name"

# Every absolute path ldd prints: libraries (`name => /path (addr)`) and the
# loader (`/lib64/ld-linux-x86-64.so.2 (addr)`); vdso has no path. Copied as
# regular files under the path the binary asks for (symlinks resolved).
mapfile -t libs < <(ldd "$bin" | grep -o '/[^ ]*' | sort -u)
[ "${#libs[@]}" -gt 0 ] || { echo "$bin: ldd found no libraries (a static binary needs none of this)" >&2; }
for lib in "${libs[@]}"; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done
# The loader must also find them by its default search path, which on
# merged-/usr Debian includes /usr/lib/<triplet>; /lib/<triplet> is where ldd
# points, so nothing more is needed. Refuse what would not work: NSS modules
# loaded with dlopen are invisible to ldd.
if ! grep -q 'libc.so.6' <<<"$(ldd "$bin")"; then
  echo "$bin does not link glibc; check DNS resolution by hand" >&2
fi
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
if [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -1)" != 2.34 ]; then
  echo "glibc $glibc < 2.34: libnss_files/libnss_dns are separate libraries; copy them too" >&2
  exit 1
fi

cat >"$out/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
P
cat >"$out/etc/group" <<'G'
root:x:0:
nonroot:x:65532:
G
cat >"$out/etc/nsswitch.conf" <<'N'
passwd: files
group:  files
hosts:  files dns
N
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
chmod -R u+rwX,go+rX,go-w "$out"
chmod 1777 "$out/tmp"
du -sh "$out" | awk -v o="$out" '{print "staged runtime root in " o ": " $1}'
