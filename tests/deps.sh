#!/bin/sh
# Installs what building and testing libtlsmail needs on Debian 12, and only
# what is missing.  Sourced or run by examples/demo.sh and tests/run.sh.
set -eu

packages="meson ninja-build pkg-config gcc g++ clang libclang-rt-14-dev libmbedtls-dev
libcmocka-dev postfix dnsmasq-base openssl ca-certificates python3 valgrind binutils golang-go
unbound ldnsutils"
# The install suite: cmake-package (cmake) and python-pip (venv with
# ensurepip; the package's build backend needs nothing more).
packages="$packages cmake python3-venv"
# The Debian step (tests/package/debian.sh): dpkg-buildpackage, the
# Build-Depends of debian/control not listed above (build-essential is
# implied by them, debhelper-compat is debhelper, dh-sequence-python3 is
# dh-python), lintian, git (git archive of the checkout); its smoke test
# needs nothing more than the suite does.
packages="$packages dpkg-dev build-essential debhelper dh-python lintian git"

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "deps.sh: need root to install:$missing" >&2
        exit 1
    fi
else
    SUDO=
fi
echo "deps.sh: installing:$missing"
# Postfix without any system configuration: the tests run private instances.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# unbound: the DANE tests run their own instance on a high port
# (tests/peers/dnssec.py); keep the package's system service from starting
# on port 53 while it installs (invoke-rc.d and deb-systemd-invoke obey
# policy-rc.d; an existing policy-rc.d, as in containers, is left alone).
policy=/usr/sbin/policy-rc.d
made_policy=
case " $missing " in
*" unbound "*)
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        made_policy=1
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    ;;
esac
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
if [ -n "$made_policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT
fi
