#!/usr/bin/env bash
# Runs a throwaway ClickHouse server for tests and benchmarks: its own config, data directory and
# loopback ports, as the `clickhouse` user (Debian's clickhouse-server refuses to run as root).
#
# Usage: scripts/clickhouse.sh DIR HTTP_PORT [TCP_PORT]
#   DIR        created if missing; holds config.xml, users.xml, data/ and log/ (every parent
#              directory must be readable by the clickhouse user: use /tmp, not /root)
#   HTTP_PORT  the HTTP interface the gateway and the tests use (127.0.0.1 only)
# The server runs in the foreground (exec): stop it with SIGTERM. Installs Debian's
# clickhouse-server first when it is missing (root only).
set -euo pipefail

dir=${1:?usage: scripts/clickhouse.sh DIR HTTP_PORT [TCP_PORT]}
http_port=${2:?usage: scripts/clickhouse.sh DIR HTTP_PORT [TCP_PORT]}
tcp_port=${3:-$((http_port + 1))}

server=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
if [ ! -x "$server" ]; then
  echo "installing clickhouse-server (Debian's package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null
fi

mkdir -p "$dir"/{data,tmp,log,user_files,format_schemas}
dir=$(cd "$dir" && pwd)
cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse.log</log>
        <errorlog>$dir/log/clickhouse.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <timezone>UTC</timezone>
</yandex>
XML
cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
if [ "$(id -u)" = 0 ]; then
  chown -R clickhouse: "$dir"
  exec runuser -u clickhouse -- "$server" --config-file="$dir/config.xml"
fi
exec "$server" --config-file="$dir/config.xml"
