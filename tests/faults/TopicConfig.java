// tests/faults/TopicConfig.java — create or update test topics with topic-level
// configs in ONE JVM (Kafka's ConfigCommand takes one topic per run). Used by
// the hostile-message test to let 10 MB values through the broker.
//
//   java -cp "$METADB_DEPLOY_CACHE/kafka-libs/*" tests/faults/TopicConfig.java \
//        BOOTSTRAP PARTITIONS key=value[,key=value...] TOPIC...
//
// Missing topics are created with PARTITIONS partitions and the configs;
// existing ones get the configs set (incrementalAlterConfigs SET). Exits
// non-zero with the broker's error on any failure.
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.config.ConfigResource;

public class TopicConfig {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: TopicConfig BOOTSTRAP PARTITIONS key=value[,...] TOPIC...");
            System.exit(2);
        }
        Map<String, String> configs = new HashMap<>();
        for (String kv : args[2].split(",")) {
            int eq = kv.indexOf('=');
            configs.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        List<String> topics = Arrays.asList(args).subList(3, args.length);
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(p)) {
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> create = new ArrayList<>();
            Map<ConfigResource, Collection<AlterConfigOp>> alter = new HashMap<>();
            for (String t : topics) {
                if (!existing.contains(t)) {
                    create.add(new NewTopic(t, Integer.parseInt(args[1]), (short) 1).configs(configs));
                } else {
                    List<AlterConfigOp> ops = new ArrayList<>();
                    for (Map.Entry<String, String> e : configs.entrySet())
                        ops.add(new AlterConfigOp(new ConfigEntry(e.getKey(), e.getValue()), AlterConfigOp.OpType.SET));
                    alter.put(new ConfigResource(ConfigResource.Type.TOPIC, t), ops);
                }
            }
            if (!create.isEmpty())
                admin.createTopics(create).all().get();
            if (!alter.isEmpty())
                admin.incrementalAlterConfigs(alter).all().get();
            System.out.println("topics ready: " + String.join(" ", topics) + " (" + args[2] + ")");
        }
    }
}
