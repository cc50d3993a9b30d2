#!/bin/sh
# The test image: Debian's static busybox (package busybox-static) with every applet
# linked, imported into podman's local storage as localhost/autonet-busybox:latest.
# No registry is needed (none is reachable here). Idempotent: an existing image stays.
# Other images: `podman load -i FILE.tar` (docker-archive/oci-archive) or `podman import`.
set -eu
IMAGE=${IMAGE:-localhost/autonet-busybox:latest}
BUSYBOX=${BUSYBOX:-/bin/busybox}
if podman image exists "$IMAGE"; then
    exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
tar -C "$root" -cf "$root.tar" .
podman import --quiet --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
echo "built $IMAGE"
