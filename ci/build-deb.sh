#!/usr/bin/env bash
# Builds the registrar's Debian package, rserpool-registrar_<version>-1_<arch>.deb, with dpkg-deb:
# the files, maintainer scripts and control fields are those of [package.metadata.deb] in
# registrar/Cargo.toml, read from there, so this builds the package cargo-deb builds without
# needing cargo-deb (registrar/tests/package.rs checks the result against that table). Prints the
# .deb's path as its last line. Needs dpkg-deb, objdump and strip (binutils) and gzip.
#
# Usage: bash ci/build-deb.sh [--binary FILE] [--out DIR]
#        bash ci/build-deb.sh --cargo-deb [--out DIR]
#   --binary FILE  package FILE (e.g. the one `cargo install` installed) instead of building
#                  `cargo build --release --locked -p rserpool-registrar`
#   --out DIR      write the .deb into DIR (default target/debian)
#   --cargo-deb    build the release binary, make the man page and completions in
#                  target/release/deb-assets/ and let cargo-deb package (`cargo install cargo-deb
#                  --locked` first)
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=registrar/Cargo.toml
target_dir=${CARGO_TARGET_DIR:-target}
binary=
out=$target_dir/debian
use_cargo_deb=false
while [ $# -gt 0 ]; do
    case $1 in
    --binary) binary=$(realpath "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --cargo-deb) use_cargo_deb=true; shift ;;
    *) echo "build-deb.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release --locked -p rserpool-registrar >&2
    binary=$target_dir/release/rserpool-registrar
elif $use_cargo_deb; then
    echo "build-deb.sh: --cargo-deb packages cargo's release build; --binary cannot go with it" >&2
    exit 2
fi

version=$("$binary" --version | awk '{ print $2 }')
arch=$(dpkg --print-architecture)
deb=$out/rserpool-registrar_${version}-1_$arch.deb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The man page and the completion scripts, made by the binary ([package.metadata.deb] names them
# under target/release/deb-assets/).
if $use_cargo_deb; then gen=$target_dir/release/deb-assets; else gen=$tmp/gen; fi
mkdir -p "$gen"
"$binary" --man-page | gzip -9n >"$gen/rserpool-registrar.8.gz"
"$binary" --completions bash >"$gen/rserpool-registrar.bash"
"$binary" --completions zsh >"$gen/_rserpool-registrar"
"$binary" --completions fish >"$gen/rserpool-registrar.fish"

mkdir -p "$out"
if $use_cargo_deb; then
    cargo deb -p rserpool-registrar --no-build --output "$deb" >&2
    echo "$deb"
    exit 0
fi

# A string key of [package.metadata.deb] ("""-strings joined as TOML joins a line ending in \);
# fails if the table lacks it.
deb_key() {
    local value
    value=$(awk -v key="$1" '
        /^\[/ { in_deb = ($0 == "[package.metadata.deb]"); next }
        !in_deb { next }
        long { line = $0; sub(/^[ \t]+/, "", line)
               if (line ~ /"""$/) { sub(/"""$/, "", line); value = value line; print value; exit }
               sub(/\\$/, "", line); value = value line; next }
        $0 ~ "^" key " = \"\"\"\\\\$" { long = 1; next }
        $0 ~ "^" key " = \"" { sub("^" key " = \"", ""); sub(/"$/, ""); print; exit }
    ' "$manifest")
    if [ -z "$value" ]; then
        echo "build-deb.sh: no $1 in [package.metadata.deb] of $manifest" >&2
        return 1
    fi
    printf '%s\n' "$value"
}
# The crate's description, from [package].
description=$(awk '/^\[/ { p = ($0 == "[package]") } p && /^description = "/ {
    sub(/^description = "/, ""); sub(/"$/, ""); print; exit }' "$manifest")
[ -n "$description" ] || { echo "build-deb.sh: no description in $manifest" >&2; exit 1; }

# The assets: one ["source", "dest", "mode"] a line. Sources are relative to registrar/;
# target/release/ is cargo's output (the binary and the files made above).
assets=$(awk '
    /^\[/ { in_deb = ($0 == "[package.metadata.deb]"); next }
    in_deb && /^assets = \[$/ { in_assets = 1; next }
    in_assets && /^\]$/ { exit }
    in_assets {
        if (match($0, /^ *\["[^"]+", "[^"]+", "[0-7]+"\],?$/) == 0) {
            print "build-deb.sh: cannot read the asset line: " $0 > "/dev/stderr"; exit 1
        }
        split($0, f, "\""); print f[2] "\t" f[4] "\t" f[6]
    }' "$manifest")
if [ -z "$assets" ]; then
    echo "build-deb.sh: no assets found in [package.metadata.deb] of $manifest" >&2
    exit 1
fi
root=$tmp/root
while IFS=$'\t' read -r source dest mode; do
    case $source in
    target/release/rserpool-registrar) from=$binary ;;
    target/release/deb-assets/*) from=$gen/${source#target/release/deb-assets/} ;;
    target/*) echo "build-deb.sh: no rule for the asset $source" >&2; exit 1 ;;
    *) from=registrar/$source ;;
    esac
    case $dest in */) dest=$dest$(basename "$source") ;; esac
    install -D -m "$mode" "$from" "$root/$dest"
    if [ "$source" = target/release/rserpool-registrar ]; then
        strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/$dest"
    fi
done <<<"$assets"

# Depends, as cargo-deb's `$auto` (dpkg-shlibdeps without libgcc, which is always there): libc6 at
# the newest glibc symbol version the binary needs. Another library needs a rule here.
bin=$root/usr/bin/rserpool-registrar
for lib in $(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }'); do
    case $lib in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*) ;;
    libgcc_s.so.1) ;;
    *) echo "build-deb.sh: no Debian package known for $lib: add it to Depends here" >&2; exit 1 ;;
    esac
done
glibc=$(objdump -p "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
if [ -z "$glibc" ]; then
    echo "build-deb.sh: $bin names no glibc symbol version: is it a static binary?" >&2
    exit 1
fi
depends="libc6 (>= $glibc)"

mkdir -p "$root/DEBIAN"
scripts=$(deb_key maintainer-scripts)
scripts_dir=registrar/$scripts
for script in preinst postinst prerm postrm; do
    if [ -f "$scripts_dir/$script" ]; then
        install -m 755 "$scripts_dir/$script" "$root/DEBIAN/$script"
    fi
done
if [ -d "$root/etc" ]; then
    (cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"
fi
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

homepage=$(awk '/^repository = "/ { sub(/^repository = "/, ""); sub(/"$/, ""); print }' Cargo.toml)
section=$(deb_key section)
priority=$(deb_key priority)
maintainer=$(deb_key maintainer)
extended=$(deb_key extended-description)
# As cargo-deb counts it: each file's KiB rounded up, plus one for its directory entry.
size=$(find "$root" -path "$root/DEBIAN" -prune -o -type f -printf '%s\n' \
    | awk '{ kib += int(($1 + 2047) / 1024) } END { print kib }')
{
    echo "Package: rserpool-registrar"
    echo "Version: $version-1"
    echo "Architecture: $arch"
    echo "Homepage: $homepage"
    echo "Section: $section"
    echo "Priority: $priority"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    echo "Description: $description"
    echo "$extended" | fold -s -w 79 | sed 's/ *$//; s/^/ /'
} >"$root/DEBIAN/control"

dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
