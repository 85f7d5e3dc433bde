# sysmanage-node .rpm %preun: stop and disable the service on erase
# ($1 = 0), not on upgrade ($1 = 1).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now sysmanage-node.service >/dev/null 2>&1 || :
fi
exit 0
