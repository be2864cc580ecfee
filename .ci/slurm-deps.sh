#!/usr/bin/env bash
# Debian packages for the real one-node Slurm cluster of the tests (tests/slurm.py): slurm-wlm
# (slurmctld, slurmd, the client commands) and munge, plus a munge key and the folders munged
# needs. Starts no daemon: the `slurm` fixture starts munged, slurmctld and slurmd itself, from
# a slurm.conf in a temporary folder. Idempotent, never prompts (no stdin needed). As root:
# installs what is missing (apt-get update first). Not root: reruns itself through passwordless
# sudo, else prints what is missing and exits 1. SYSTEM_DEPS_FORCE=1 runs apt-get update/install
# even when everything is present.
set -euo pipefail

PACKAGES=(slurm-wlm slurmctld slurmd slurm-client munge)
MUNGE_KEY=/etc/munge/munge.key
export DEBIAN_FRONTEND=noninteractive

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
            echo "$p"
        fi
    done
}

munge_problems() {
    if ! getent passwd munge >/dev/null; then
        echo "user munge is missing"
        return 0
    fi
    if [ ! -e "$MUNGE_KEY" ]; then
        echo "$MUNGE_KEY is missing"
    elif [ -r "$MUNGE_KEY" ] || [ "$(id -u)" -eq 0 ]; then
        [ "$(stat -c %U:%a "$MUNGE_KEY")" = munge:400 ] ||
            echo "$MUNGE_KEY is not owned by munge with mode 0400"
    fi
    return 0
}

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n env SYSTEM_DEPS_FORCE="${SYSTEM_DEPS_FORCE:-}" bash "$(readlink -f "$0")" "$@"
    fi
    mapfile -t missing < <(missing_packages)
    mapfile -t problems < <(munge_problems)
    if [ ${#missing[@]} -eq 0 ] && [ ${#problems[@]} -eq 0 ]; then
        echo "slurm-deps: all present"
        exit 0
    fi
    echo "slurm-deps: not root and no passwordless sudo; as root, run $0" >&2
    [ ${#missing[@]} -eq 0 ] || echo "  missing packages: ${missing[*]}" >&2
    for problem in "${problems[@]}"; do echo "  $problem" >&2; done
    exit 1
fi

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -gt 0 ] || [ -n "${SYSTEM_DEPS_FORCE:-}" ]; then
    echo "slurm-deps: installing ${missing[*]:-${PACKAGES[*]}}"
    # Keep the packages' maintainer scripts from starting munged/slurmd/slurmctld (on a booted
    # host they would): a policy-rc.d that denies every start, only for this install and only
    # when the machine has none of its own (Docker images ship one that does the same).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        trap 'rm -f "$policy"' EXIT
        printf '#!/bin/sh\n# slurm-deps.sh: start no service during the install\nexit 101\n' \
            >"$policy"
        chmod 0755 "$policy"
    fi
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${PACKAGES[@]}" </dev/null
fi

# The munge package creates the user, but not always the key (and never on a reinstall that
# kept /etc/munge without it); munged refuses to start without a key it owns with mode 0400.
if ! getent passwd munge >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin munge
fi
group=$(id -gn munge)
install -d -m 0700 -o munge -g "$group" /etc/munge /var/lib/munge /var/log/munge
install -d -m 0755 -o munge -g "$group" /run/munge
if [ ! -s "$MUNGE_KEY" ]; then
    rm -f "$MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY"
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
    echo "slurm-deps: created $MUNGE_KEY"
fi
chown munge:"$group" "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"

version=$(dpkg-query -W -f='${Version}' slurmctld)
echo "slurm-deps: ok (slurm $version, munge $(dpkg-query -W -f='${Version}' munge)," \
    "key $MUNGE_KEY)"
