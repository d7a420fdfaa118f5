"""Administration of the host side: vmgroups (tenants), per-datastore access rules and quotas,
VSAN policies (an sqlite DB), the admin API served on its own socket, and ``dockvols-admin``."""
