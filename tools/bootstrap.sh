#!/usr/bin/env bash
# Install everything usertcp needs on Debian bookworm, idempotently (run as root).
#   - Debian packages: bcc (python3-bpfcc; PyPI's "bcc" is an unrelated project), iproute2,
#     iperf3, tshark/dumpcap, python3-venv, ethtool, and iptables (the lab's delay line hangs
#     off an NFQUEUE rule: this kernel has no sch_netem and no native nft queue).
#   - Kernel headers for bcc when the running kernel ships none: Debian's cloud headers, linked as
#     /lib/modules/$(uname -r)/build and .../source (see shared DESIGN.md: this is what worked here).
#   - A virtual environment in .venv built on Debian's python3 with system site-packages, so
#     `import bcc` works, and the pinned Python requirements from requirements.txt.
# A second run only checks and returns quickly.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: must run as root (it installs Debian packages and kernel headers)" >&2
    exit 1
fi

pkgs=(python3-bpfcc python3-venv iproute2 iperf3 tshark ethtool iptables curl wget wrk)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
kver=$(uname -r)
kbuild=/lib/modules/$kver/build
need_headers=0
[ -e "$kbuild/Makefile" ] || need_headers=1
if [ "$need_headers" = 1 ] && ! ls -d /usr/src/linux-headers-*-cloud-amd64 >/dev/null 2>&1; then
    # The running kernel's own headers if Debian has them, else the cloud flavour's (DESIGN.md:
    # bcc compiled and loaded the gate's TC and XDP programs with those on this kernel).
    if apt-cache show "linux-headers-$(uname -r)" >/dev/null 2>&1; then
        missing+=("linux-headers-$(uname -r)")
    else
        missing+=(linux-headers-cloud-amd64)
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$need_headers" = 1 ] && [ ! -e "$kbuild/Makefile" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-cloud-amd64 | sort -V | tail -n 1)
    common=${hdr%-cloud-amd64}-common
    mkdir -p "/lib/modules/$kver"
    ln -sfn "$hdr" "$kbuild"
    [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$kver/source"
    echo "bootstrap: linked kernel headers $hdr for $kver (bcc)"
fi

venv=$here/.venv
if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp=$venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
"$venv/bin/python" -c "import bcc, pyroute2, scapy" || {
    echo "bootstrap: the virtual environment cannot import bcc/pyroute2/scapy" >&2; exit 1; }
