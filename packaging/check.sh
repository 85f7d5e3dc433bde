#!/usr/bin/env bash
# Builds the .deb and .rpm and checks them on this machine, as root:
#  - lintian reports no error on the .deb;
#  - the .rpm lists its files, its config file (noreplace) and scriptlets;
#  - dpkg -i installs it: the binary runs, check-config passes on the
#    packaged /etc/sysmanage-node/node.toml, the user and the directories
#    exist, the unit verifies, and init writes secrets the service user
#    can read;
#  - dpkg -r removes it and keeps the config; dpkg -P purges the rest.
# Called by .ci/run; safe to run again (it purges a sysmanage-node package
# left by an earlier run first).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "== packaging: $*"; }
fail() { echo "packaging check FAILED: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
    fail "needs root (dpkg -i, useradd)"
fi

tools=()
command -v lintian >/dev/null || tools+=(lintian)
command -v rpm >/dev/null || tools+=(rpm)
command -v adduser >/dev/null || tools+=(adduser)
if [ ${#tools[@]} -gt 0 ]; then
    step "apt-get install ${tools[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
fi

bash packaging/build.sh
deb=$(ls -t target/debian/sysmanage-node_*.deb | head -1)
rpmfile=$(ls -t target/generate-rpm/sysmanage-node-*.rpm | head -1)

step "lintian $deb"
# Errors fail the build; warnings are shown.
lintian --fail-on error --tag-display-limit 0 "$deb"

step "rpm contents of $rpmfile"
rpm -qlp "$rpmfile" | tee target/rpm-files.txt
for f in /usr/bin/sysmanage-node /etc/sysmanage-node/node.toml /usr/lib/systemd/system/sysmanage-node.service \
         /usr/share/man/man1/sysmanage-node.1.gz /usr/share/man/man5/sysmanage-node.toml.5.gz; do
    grep -qx "$f" target/rpm-files.txt || fail "$f missing from the .rpm"
done
rpm -qcp "$rpmfile" | grep -qx /etc/sysmanage-node/node.toml || fail "node.toml is not a config file in the .rpm"
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmfile" | grep -q '^/etc/sysmanage-node/node.toml cn$' \
    || fail "node.toml is not %config(noreplace) in the .rpm"
rpm -qp --scripts "$rpmfile" | tee target/rpm-scripts.txt
for s in preinstall postinstall preuninstall postuninstall; do
    grep -q "^$s scriptlet" target/rpm-scripts.txt || fail "no $s scriptlet in the .rpm"
done
grep -q 'useradd -r' target/rpm-scripts.txt || fail "the .rpm does not create its user"

if dpkg -s sysmanage-node >/dev/null 2>&1; then
    step "purging sysmanage-node left from an earlier run"
    dpkg -P sysmanage-node >/dev/null
fi

step "dpkg -i $deb"
dpkg -i "$deb"
/usr/bin/sysmanage-node --version
/usr/bin/sysmanage-node check-config /etc/sysmanage-node/node.toml
getent passwd sysmanage-node >/dev/null || fail "no user sysmanage-node"
[ "$(stat -c %U:%a /var/lib/sysmanage-node)" = "sysmanage-node:750" ] || fail "/var/lib/sysmanage-node: $(stat -c %U:%a /var/lib/sysmanage-node)"
[ "$(stat -c %G:%a /etc/sysmanage-node)" = "sysmanage-node:750" ] || fail "/etc/sysmanage-node: $(stat -c %G:%a /etc/sysmanage-node)"
test -f /lib/systemd/system/sysmanage-node.service || fail "no systemd unit"
test -f /usr/share/man/man1/sysmanage-node.1.gz || fail "no man page 1"
test -f /usr/share/man/man5/sysmanage-node.toml.5.gz || fail "no man page 5"
if command -v systemd-analyze >/dev/null; then
    step "systemd-analyze verify"
    # Documentation= lookups need man-db; only the unit's own findings count.
    out=$(systemd-analyze verify /lib/systemd/system/sysmanage-node.service 2>&1 || true)
    echo "$out"
    if echo "$out" | grep -v "Command 'man " | grep -q 'sysmanage-node.service'; then
        fail "systemd-analyze verify reports problems"
    fi
fi
# An in-place upgrade through the package: a node runs from version N
# (as root, on loopback ports, the config edited for them), an agent's
# tunnel and a keep-alive client are open through it, and `dpkg -i` of
# version N+1 (the same binary repackaged with a higher version) upgrades
# it in place from the postinst; the connections survive.
step "in-place upgrade: dpkg -i version N+1 under open connections"
version=$(dpkg-deb -f "$deb" Version)
rm -rf target/debian/upgrade
cargo deb --no-build --no-strip --deb-version "${version}+upgradetest1" -o target/debian/upgrade/ >/dev/null
new_deb=$(ls target/debian/upgrade/*.deb)
sed -i 's/^bind = "0.0.0.0:80"/bind = "127.0.0.1:18180"/; s/127.0.0.1:8080/127.0.0.1:18181/g; s/127.0.0.1:9100/127.0.0.1:19190/' \
    /etc/sysmanage-node/node.toml
/usr/bin/sysmanage-node run -c /etc/sysmanage-node/node.toml >target/pkg-upgrade-node.log 2>&1 &
first_pid=$!
for _ in $(seq 50); do
    [ -f /var/lib/sysmanage-node/running.pid ] && break
    sleep 0.2
done
# Every node process of this step is stopped by its PID, also on failure.
stop_upgrade_nodes() {
    local p
    p=$(cat /var/lib/sysmanage-node/running.pid 2>/dev/null || true)
    kill -TERM "$first_pid" ${p:+"$p"} 2>/dev/null || true
}
pids=$(python3 packaging/upgrade_check.py "$new_deb" 18180 18181) || {
    tail -n 40 target/pkg-upgrade-node.log
    stop_upgrade_nodes
    fail "in-place upgrade through the package"
}
echo "$pids"
[ "$(dpkg-query -W -f '${Version}' sysmanage-node)" = "${version}+upgradetest1" ] || { stop_upgrade_nodes; fail "version N+1 is not installed"; }
read -r _ old_pid new_pid <<<"$pids"
[ "$old_pid" = "$first_pid" ] || { stop_upgrade_nodes; fail "the PID file named $old_pid, not the started node $first_pid"; }
# The old process may have exited already: its connections closed with the check.
kill -TERM "$new_pid" "$old_pid" 2>/dev/null || true
for _ in $(seq 100); do
    kill -0 "$new_pid" 2>/dev/null || kill -0 "$old_pid" 2>/dev/null || break
    sleep 0.2
done
! kill -0 "$new_pid" 2>/dev/null || fail "the upgraded node $new_pid did not stop on SIGTERM"
! kill -0 "$old_pid" 2>/dev/null || fail "the retiring node $old_pid did not stop on SIGTERM"
wait "$first_pid" 2>/dev/null || true
grep -q "upgrade: the new process serves; this one retires" target/pkg-upgrade-node.log || fail "no retire line in the log"
# The node ran as root: its files go, the package's config comes back.
rm -f /var/lib/sysmanage-node/sessions.redb /var/lib/sysmanage-node/upgrade.status
cp packaging/node.toml /etc/sysmanage-node/node.toml

# The service user can read what init writes (it runs as that user).
step "init --force as root, check-config as the service user"
sysmanage-node init --force >/dev/null
for f in admin.token cluster.key tls/server.key; do
    [ "$(stat -c %U:%a /etc/sysmanage-node/$f)" = "sysmanage-node:600" ] || fail "$f: $(stat -c %U:%a /etc/sysmanage-node/$f)"
done
runuser -u sysmanage-node -- /usr/bin/sysmanage-node check-config /etc/sysmanage-node/node.toml >/dev/null \
    || fail "the service user cannot load the config init wrote"

step "dpkg -r"
dpkg -r sysmanage-node
test ! -e /usr/bin/sysmanage-node || fail "binary left after dpkg -r"
test ! -e /lib/systemd/system/sysmanage-node.service || fail "unit left after dpkg -r"
test -f /etc/sysmanage-node/node.toml || fail "dpkg -r removed the config (only purge should)"
step "dpkg -P"
dpkg -P sysmanage-node
test ! -e /etc/sysmanage-node || fail "/etc/sysmanage-node left after purge: $(ls -R /etc/sysmanage-node)"
test ! -e /var/lib/sysmanage-node || fail "/var/lib/sysmanage-node left after purge"
! getent passwd sysmanage-node >/dev/null || fail "user left after purge"
step "OK"
