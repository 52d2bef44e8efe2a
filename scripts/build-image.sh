#!/usr/bin/env bash
# Builds the trellis image (Containerfile) from what this machine has: no base image is pulled.
#
#   scripts/build-image.sh [TAG]        default TAG: localhost/trellis:<package.json version>
#
# It stages a root filesystem in a temporary folder — Node 24 from node_modules/node, the
# shared libraries it and git load (ldd), git with its https helpers, the app with its
# production dependencies (npm ci --omit=dev), passwd/group with uid 65532 — and runs
# `buildah bud` (or `podman build` when only podman is installed) on it.
# Needs: npm ci run once in this repository (for node_modules/node), strip, ldd, and buildah
# or podman. TRELLIS_IMAGE_KEEP_STAGE=1 keeps the staged folder and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)
tag=${1:-localhost/trellis:$version}

node_bin=$repo/node_modules/node/bin/node
[ -x "$node_bin" ] || { echo "build-image: $node_bin is missing: run npm ci first" >&2; exit 2; }
if command -v buildah >/dev/null; then builder=(buildah bud --layers=false)
elif command -v podman >/dev/null; then builder=(podman build)
else echo "build-image: neither buildah nor podman is installed (Debian: apt-get install buildah)" >&2; exit 2; fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/trellis-image.XXXXXX")
if [ "${TRELLIS_IMAGE_KEEP_STAGE:-}" = 1 ]; then echo "build-image: staging in $stage" >&2
else trap 'rm -rf "$stage"' EXIT; fi
root=$stage/rootfs
mkdir -p "$root"/{app,etc/ssl/certs,tmp,usr/local/bin,usr/bin,usr/lib/git-core}

# The app: what package.json "files" publishes, plus the lockfile for an exact npm ci, and
# the sidecar's bundle, built from these sources (the image has no esbuild to rebuild it).
"$node_bin" scripts/build-sidecar.ts
mkdir -p "$root/app/dist"
cp -a bin src schema package.json package-lock.json "$root/app/"
cp -a dist/sidecar "$root/app/dist/"
# The kernel runs a script by its first line; /usr/bin/env is not in the image, node is here.
sed -i '1s|^#!.*|#!/usr/local/bin/node|' "$root/app/bin/trellis.js"
chmod 0755 "$root/app/bin/trellis.js"
(cd "$root/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error)
rm -f "$root/app/package-lock.json"
# Source maps and type declarations are for editors and debuggers: half of node_modules by size.
find "$root/app/node_modules" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \) -delete
ln -s /app/bin/trellis.js "$root/usr/local/bin/trellis"

# Node 24, the one the test suite runs, without its symbol tables and debug sections (126 → 108 MB;
# distributions ship node stripped the same way).
strip --strip-all -o "$root/usr/local/bin/node" "$node_bin"

# git for the reconciler's clone (https, http and git:// transports; ssh and local paths need
# a shell or ssh, which the image does not carry).
cp /usr/lib/git-core/git "$root/usr/lib/git-core/git"
cp /usr/lib/git-core/git-remote-http "$root/usr/lib/git-core/git-remote-http"
ln -s git-remote-http "$root/usr/lib/git-core/git-remote-https"
ln -s ../lib/git-core/git "$root/usr/bin/git"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"

# Shared libraries and the loader, at the paths the binaries ask for.
for bin in "$node_bin" /usr/lib/git-core/git /usr/lib/git-core/git-remote-http; do
  ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]*ld-linux/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
chmod 1777 "$root/tmp"

"${builder[@]}" -f "$repo/Containerfile" -t "$tag" "$stage"
echo "build-image: built $tag" >&2
