# sysmanage-node .rpm %pre: the system user the service runs as.
# $1 = 1 on install, 2 on upgrade.
getent group sysmanage-node >/dev/null || groupadd -r sysmanage-node
getent passwd sysmanage-node >/dev/null || \
    useradd -r -g sysmanage-node -d /var/lib/sysmanage-node -M -s /sbin/nologin \
        -c "sysmanage-node load balancer" sysmanage-node
exit 0
