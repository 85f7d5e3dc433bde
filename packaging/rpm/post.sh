# sysmanage-node .rpm %post: data directory, config directory permissions,
# systemd. Not started on first install (point the config at your servers
# first). On upgrade a running node is upgraded in place (`sysmanage-node
# upgrade`, no connection dropped); one too old to hand over (no PID file)
# is restarted, and one whose upgrade fails keeps the old version.
# $1 = 1 install, 2 upgrade.
install -d -o sysmanage-node -g sysmanage-node -m 0750 /var/lib/sysmanage-node
chown root:sysmanage-node /etc/sysmanage-node
chmod 0750 /etc/sysmanage-node
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 2 ]; then
    rc=0
    /usr/bin/sysmanage-node upgrade -c /etc/sysmanage-node/node.toml || rc=$?
    if [ "$rc" = 3 ]; then
        if [ -d /run/systemd/system ]; then
            systemctl try-restart sysmanage-node.service >/dev/null 2>&1 || :
        fi
    elif [ "$rc" != 0 ]; then
        echo "sysmanage-node: the in-place upgrade failed; the running node keeps the old version." >&2
        echo "sysmanage-node: fix the cause above, then run: sysmanage-node upgrade" >&2
    fi
fi
exit 0
