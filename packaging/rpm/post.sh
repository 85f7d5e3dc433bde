# sysmanage-node .rpm %post: data directory, config directory permissions,
# systemd. Not started on first install (point the config at your servers
# first); restarted on upgrade if it was running. $1 = 1 install, 2 upgrade.
install -d -o sysmanage-node -g sysmanage-node -m 0750 /var/lib/sysmanage-node
chown root:sysmanage-node /etc/sysmanage-node
chmod 0750 /etc/sysmanage-node
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 2 ]; then
        systemctl try-restart sysmanage-node.service >/dev/null 2>&1 || :
    fi
fi
exit 0
