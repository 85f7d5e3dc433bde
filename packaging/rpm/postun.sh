# sysmanage-node .rpm %postun: after erase ($1 = 0) reload systemd; the
# user, /var/lib/sysmanage-node and the secrets init wrote are kept, as
# Fedora's packaging guidelines ask (remove them by hand if wanted).
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
