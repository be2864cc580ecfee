#!/usr/bin/env bash
# Debian packages the real-server tests need (tests/servers.py: git daemon, git http-backend,
# git-shell, sshd, ssh, ssh-keygen, the openssl CLI) and the `git` account that sshd serves.
# Idempotent, never prompts (no stdin needed). As root: installs what is missing (apt-get update
# first). Not root: reruns itself through passwordless sudo, else prints what is missing and
# exits 1. SYSTEM_DEPS_FORCE=1 runs apt-get update/install even when everything is present.
set -euo pipefail

PACKAGES=(git openssh-server openssh-client openssl ca-certificates passwd)
GIT_HOME=/var/lib/torchjob-git # keep equal to GIT_USER_HOME in tests/servers.py
GIT_SHELL=/usr/bin/git-shell
export DEBIAN_FRONTEND=noninteractive

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
            echo "$p"
        fi
    done
}

git_user_problems() {
    local entry home shell
    if ! entry=$(getent passwd git); then
        echo "user git is missing"
        return
    fi
    home=$(cut -d: -f6 <<<"$entry")
    shell=$(cut -d: -f7 <<<"$entry")
    [ -d "$home" ] || echo "home of user git ($home) does not exist"
    [ -x "$shell" ] || echo "shell of user git ($shell) is not executable"
    if [ -r /etc/shadow ] && getent shadow git | cut -d: -f2 | grep -q '^!'; then
        echo "user git is locked (sshd would refuse its keys)"
    fi
    return 0
}

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n env SYSTEM_DEPS_FORCE="${SYSTEM_DEPS_FORCE:-}" bash "$(readlink -f "$0")" "$@"
    fi
    mapfile -t missing < <(missing_packages)
    mapfile -t problems < <(git_user_problems)
    if [ ${#missing[@]} -eq 0 ] && [ ${#problems[@]} -eq 0 ]; then
        echo "system-deps: all present"
        exit 0
    fi
    echo "system-deps: not root and no passwordless sudo; as root, run $0" >&2
    [ ${#missing[@]} -eq 0 ] || echo "  missing packages: ${missing[*]}" >&2
    for problem in "${problems[@]}"; do echo "  $problem" >&2; done
    exit 1
fi

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -gt 0 ] || [ -n "${SYSTEM_DEPS_FORCE:-}" ]; then
    echo "system-deps: installing ${missing[*]:-${PACKAGES[*]}}"
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${PACKAGES[@]}" </dev/null
fi

if ! getent passwd git >/dev/null; then
    useradd --system --user-group --home-dir "$GIT_HOME" --shell "$GIT_SHELL" --password '*' git
    echo "system-deps: created user git (home $GIT_HOME, shell $GIT_SHELL)"
fi
home=$(getent passwd git | cut -d: -f6)
if [ ! -d "$home" ] || [ "$home" = / ]; then
    [ "$home" = "$GIT_HOME" ] || usermod --home "$GIT_HOME" git
    home=$GIT_HOME
fi
install -d -m 0755 -o git -g "$(id -gn git)" "$home"
case "$(getent passwd git | cut -d: -f7)" in
    "$GIT_SHELL" | /bin/sh | /bin/bash | /usr/bin/bash) ;;
    *) usermod --shell "$GIT_SHELL" git ;;
esac
if getent shadow git | cut -d: -f2 | grep -q '^!'; then
    usermod --password '*' git # a locked account ('!') is refused by sshd without PAM
fi
install -d -m 0755 /run/sshd # privilege separation folder (systemd makes it on a booted host)
echo "system-deps: ok ($(git --version), $(ssh -V 2>&1 | cut -d, -f1), user git home $home)"
