#!/usr/bin/env bash
# Builds converge's image on a machine that reaches no image registry: the binary
# is built here, laid out with the libraries it links and the CA certificates in
# target/image-rootfs/, and packed by the Containerfile's `prebuilt` stage
# (FROM scratch: nothing is pulled). Then `converge version` runs inside it.
#
#   hack/image.sh [TAG]          # default localhost/converge:<version>
#   PROFILE=dev hack/image.sh    # a debug build, quicker to make
#
# Installs buildah from Debian when it is missing. kustomize and helm go in too
# when hack/tools.sh has built them (or they are on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${1:-localhost/converge:$version}
profile=${PROFILE:-release}
case $profile in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac

if ! command -v buildah >/dev/null; then
  command -v apt-get >/dev/null || { echo "image.sh: buildah is not installed; install it with your package manager" >&2; exit 1; }
  sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
  echo "image.sh: installing buildah" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi

cargo build --profile "$profile" --locked --bin converge
eval "$(hack/tools.sh path)"
bin=target/$dir/converge

root=target/image-rootfs
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/converge" \
  "$root/var/lib/converge" "$root/tmp"
install -m 0755 "$bin" "$root/usr/local/bin/converge"
strip "$root/usr/local/bin/converge"

# The shared libraries the binary links, where the loader looks for them.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
for tool in kustomize helm; do
  if path=$(command -v "$tool"); then
    install -m 0755 "$path" "$root/usr/local/bin/$tool"
  else
    echo "image.sh: $tool is not on PATH; the image has none" >&2
  fi
done
printf 'converge:x:65532:65532:converge:/var/lib/converge:/sbin/nologin\n' >"$root/etc/passwd"
printf 'converge:x:65532:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/var/lib/converge" 2>/dev/null || true

buildah bud --layers=false --target prebuilt -f Containerfile -t "$tag" .

container=$(buildah from "$tag")
trap 'buildah rm "$container" >/dev/null' EXIT
echo "image.sh: $tag runs: $(buildah run --isolation chroot --user 65532:65532 "$container" -- /usr/local/bin/converge version)"
