#!/usr/bin/env bash
# deploy/kafka-tool.sh — Apache Kafka's own command-line tools, run from the
# jars deploy/install.sh fetched (no Kafka distribution needed).
#
#   deploy/kafka-tool.sh consumer-groups --group metadb-workers --describe
#   deploy/kafka-tool.sh consumer-groups --group metadb-linkers --topic metadb.instances \
#                        --reset-offsets --to-earliest --dry-run      # then --execute
#   deploy/kafka-tool.sh topics --describe --topic metadb.files
#   deploy/kafka-tool.sh topics --alter --topic metadb.files --partitions 12
#   deploy/kafka-tool.sh get-offsets --topic metadb.files               # high watermarks
#
# Tools: consumer-groups (kafka-consumer-groups), topics (kafka-topics),
# get-offsets (kafka-get-offsets), configs (kafka-configs).
# --bootstrap-server defaults to $METADB_KAFKA_BROKERS, else 127.0.0.1:9092.
# For SASL/TLS clusters pass --command-config FILE with the Java client's
# security.protocol, sasl.mechanism and sasl.jaas.config.
# Jars: ${METADB_DEPLOY_CACHE:-$METADB_HOME/cache}/kafka-libs (METADB_HOME
# defaults to ~/.metadb).
set -euo pipefail

METADB_HOME=${METADB_HOME:-$HOME/.metadb}
LIBS=${METADB_DEPLOY_CACHE:-$METADB_HOME/cache}/kafka-libs

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

[ $# -ge 1 ] || usage 2
case $1 in
    consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    configs) class=kafka.admin.ConfigCommand ;;
    -h|--help|help) usage 0 ;;
    *) echo "kafka-tool: unknown tool '$1' (consumer-groups, topics, get-offsets, configs)" >&2; exit 2 ;;
esac
shift
ls "$LIBS"/kafka-tools-*.jar >/dev/null 2>&1 || {
    echo "kafka-tool: no Kafka jars in $LIBS (run deploy/install.sh)" >&2
    exit 1
}
args=("$@")
has_bootstrap=0
for a in "$@"; do
    case $a in --bootstrap-server|--bootstrap-server=*) has_bootstrap=1 ;; esac
done
[ $has_bootstrap = 1 ] || args=(--bootstrap-server "${METADB_KAFKA_BROKERS:-127.0.0.1:9092}" "${args[@]}")
exec java -Xms32m -Xmx256m -Dlog4j2.level=WARN -cp "$LIBS/*" "$class" "${args[@]}"
